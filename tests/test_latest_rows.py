"""Each entity's latest row (skewless/online/latest.py): the walk entity by entity (`sparse`)
gives exactly the rows DISTINCT ON gives and a brute-force oracle picks, with ties on
feature_ts broken by created_at, composite keys, an as-of bound, and entities with no row before
it; `is_sparse` takes the walk only where it is safe and pays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from skewless.online.latest import is_sparse, latest_rows, latest_versions
from skewless.registry import Feature, FeatureView

T0 = datetime(2013, 1, 1, tzinfo=UTC)


def _view(table: str, entity: tuple[str, ...]) -> FeatureView:
    return FeatureView(
        name=table,
        version=1,
        schema="public",
        table=table,
        entity=entity,
        features=(Feature("x", "bigint", "a value"),),
        ttl=None,
        freshness_sla=None,
        owner="tests",
        description="latest rows",
    )


@pytest.fixture
def table(pg):
    name = f"latest_{uuid.uuid4().hex[:8]}"
    pg.execute(
        sql.SQL(
            "create table {} (a text not null, b integer not null, feature_ts timestamptz not null,"
            " created_at timestamptz not null, x bigint)"
        ).format(sql.Identifier(name))
    )
    pg.execute(
        sql.SQL("create unique index on {} (a, b, feature_ts, created_at)").format(
            sql.Identifier(name)
        )
    )
    pg.commit()
    yield name
    pg.rollback()
    pg.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(name)))
    pg.commit()


rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),  # key a
        st.integers(0, 3),  # key b
        st.integers(0, 6),  # feature_ts (hours): ties
        st.integers(0, 3),  # created_at (hours): ties broken by it
        st.integers(-5, 5),
    ),
    max_size=60,
)


def _oracle(data, keys: int, as_of: int | None) -> list[tuple]:
    best: dict[tuple, tuple] = {}
    for row in data:
        if as_of is not None and row[2] > as_of:
            continue
        key = row[:keys]
        if key not in best or (row[2], row[3]) > (best[key][2], best[key][3]):
            best[key] = row
    return sorted(best.values(), reverse=True)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=rows, as_of=st.one_of(st.none(), st.integers(0, 6)), composite=st.booleans())
def test_the_walk_gives_the_rows_distinct_on_gives(pg, table, data, as_of, composite):
    entity = ("a", "b") if composite else ("a",)
    view = _view(table, entity)
    # one row per version (keys, feature_ts, created_at): with one key, rows of (a) differ in b,
    # which is not part of it, so only the first of each version is kept
    version = (lambda r: r[:4]) if composite else (lambda r: (r[0], r[2], r[3]))
    unique: dict[tuple, tuple] = {}
    for r in data:
        unique.setdefault(version(r), r)
    pg.execute(sql.SQL("truncate {}").format(sql.Identifier(table)))
    if unique:
        with pg.cursor().copy(sql.SQL("copy {} from stdin").format(sql.Identifier(table))) as copy:
            for a, b, ts, created, x in unique.values():
                copy.write_row((a, b, T0 + timedelta(hours=ts), T0 + timedelta(hours=created), x))
    where = (
        sql.SQL("where feature_ts <= {}").format(sql.Literal(T0 + timedelta(hours=as_of)))
        if as_of is not None
        else None
    )
    columns = sql.SQL("a, b, feature_ts, created_at, x")
    dense = pg.execute(latest_rows(view, where, columns)).fetchall()
    walked = pg.execute(latest_rows(view, where, columns, sparse=True)).fetchall()
    assert walked == dense  # the same rows, in the same (descending key) order
    expected = _oracle(list(unique.values()), len(entity), as_of)
    assert [
        (a, b, int((ts - T0) / timedelta(hours=1)), int((c - T0) / timedelta(hours=1)), x)
        for a, b, ts, c, x in walked
    ] == expected
    if as_of is None:
        keys = len(entity)
        versions = pg.execute(latest_versions(view, sparse=True)).fetchall()
        assert versions == [(*r[:keys], r[2], r[3]) for r in walked]
    pg.rollback()


def test_is_sparse_only_with_the_index_not_null_keys_and_many_rows_per_entity(pg, table):
    view = _view(table, ("a", "b"))
    ident = sql.Identifier(table)
    pg.execute(
        sql.SQL(
            "insert into {} select 'k' || (i % 5), i % 2, timestamptz '2013-01-01' + i * interval"
            " '1 minute', timestamptz '2013-01-01', i from generate_series(1, 20000) i"
        ).format(ident)
    )
    pg.execute(sql.SQL("analyze {}").format(ident))
    assert is_sparse(pg, view)  # 10 entities, 2,000 rows each
    assert not is_sparse(pg, _view(table, ("x",)))  # no (x, feature_ts, created_at) index
    pg.execute(sql.SQL("alter table {} alter column b drop not null").format(ident))
    assert not is_sparse(pg, view)  # a NULL key would stop the walk
    pg.execute(sql.SQL("alter table {} alter column b set not null").format(ident))
    pg.execute(sql.SQL("update {} set a = 'k' || x").format(ident))  # one row per entity
    pg.execute(sql.SQL("analyze {}").format(ident))
    assert not is_sparse(pg, view)
    assert not is_sparse(pg, _view("no_such_table", ("a",)))
