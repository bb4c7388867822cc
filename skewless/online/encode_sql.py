"""The online encoding computed inside PostgreSQL, so bulk materialization moves ready bytes.

PostgreSQL builds each entity's Redis key, the 32-character version header, the MessagePack array
of values and the expiry time in the query that selects the latest rows; Python only forwards them
to Redis. `codec.encode` (the push path) and this SQL must agree value for value: a property test
decodes both and compares them.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import sql

from skewless.errors import DefinitionError
from skewless.online.codec import OFFSET_US, lifetime, span_us
from skewless.online.latest import key_list, latest_rows, latest_versions, version_columns
from skewless.registry import FeatureView
from skewless.registry.model import normal_type

_FLOATS = {"double precision", "real", "numeric", "decimal"}
_INTEGERS = {"bigint", "integer", "smallint"}
_KEY_TYPES = _INTEGERS | {"text", "character", "char", "bpchar"}


def _key_part(column: str) -> sql.Composable:
    escaped = sql.SQL("coalesce({}::text, '')").format(sql.Identifier(column))
    # written out, not as literals: '%%' is a % once parameters are bound, '{{' a { once formatted
    for char, code in (("%%", "%%25"), ("|", "%%7C"), ("{{", "%%7B"), ("}}", "%%7D")):
        escaped = sql.SQL("replace({}, '" + char + "', '" + code + "')").format(escaped)
    return escaped


_EPOCH_2000_US = 946_684_800_000_000  # PostgreSQL counts microseconds from 2000-01-01


def _micros(column: sql.Composable) -> sql.Composable:
    """Exact microseconds since 1970 as bigint, read from the binary form (integer microseconds
    since 2000): a third of the cost of the numeric `extract(epoch ...)` on every entity."""
    return sql.SQL("(('x' || encode(timestamptz_send({}), 'hex'))::bit(64)::bigint + {})").format(
        column, sql.Literal(_EPOCH_2000_US)
    )


def _header(ts: sql.Composable, created: sql.Composable) -> sql.Composable:
    """`codec.header`: both instants as 16 hex digits of microseconds + 2^62."""
    return sql.SQL(
        "convert_to(encode(int8send({} + {o}) || int8send({} + {o}), 'hex'), 'UTF8')"
    ).format(_micros(ts), _micros(created), o=sql.Literal(OFFSET_US))


def _iso(column: sql.Composable, with_zone: bool) -> sql.Composable:
    """Python's `isoformat()`: microseconds only when non-zero, UTC offset as +00:00."""
    zone = sql.SQL(" || '+00:00'") if with_zone else sql.SQL("")
    return sql.SQL(
        "to_char({c}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        " || case when mod(extract(microseconds from {c})::bigint, 1000000) = 0 then ''"
        " else to_char({c}, '.US') end{zone}"
    ).format(c=column, zone=zone)


def _packed_str(text: sql.Composable) -> sql.Composable:
    """A MessagePack str: a length-prefixed UTF-8 string (fixstr, str8, str16 or str32)."""
    return sql.SQL(
        "(select case when n < 32 then set_byte('\\x00'::bytea, 0, 160 + n)"
        " when n < 256 then '\\xd9'::bytea || set_byte('\\x00'::bytea, 0, n)"
        " when n < 65536 then '\\xda'::bytea || substring(int4send(n) from 3 for 2)"
        " else '\\xdb'::bytea || int4send(n) end || b"
        " from (select octet_length(b) as n, b from (select convert_to({t}, 'UTF8') as b) s) l)"
    ).format(t=text)


def _packed_value(column: str, dtype: str) -> sql.Composable:
    """One value as MessagePack, typed as `codec.encode` types it (NaN is nil, as in pandas)."""
    col = sql.Identifier(column)
    kind = normal_type(dtype).split("(")[0].strip()
    if kind in _FLOATS:
        return sql.SQL(
            "case when {f} is null or {f} = 'NaN' then '\\xc0'::bytea"
            " else '\\xcb'::bytea || float8send({f}) end"
        ).format(f=sql.SQL("{}::float8").format(col))
    if kind in _INTEGERS:
        return sql.SQL(
            "case when {c} is null then '\\xc0'::bytea else '\\xd3'::bytea || int8send({c}::int8) end"
        ).format(c=col)
    if kind == "boolean":
        return sql.SQL(
            "case when {c} then '\\xc3'::bytea when not {c} then '\\xc2'::bytea"
            " else '\\xc0'::bytea end"
        ).format(c=col)
    if kind == "timestamptz":
        text = _iso(col, with_zone=True)
    elif kind.startswith("timestamp"):
        text = _iso(col, with_zone=False)
    else:
        text = sql.SQL("{}::text").format(col)
    return sql.SQL("case when {c} is null then '\\xc0'::bytea else {s} end").format(
        c=col, s=_packed_str(text)
    )


def _packed_array_header(n: int) -> sql.Composable:
    if n < 16:
        return sql.SQL("'\\x{}'::bytea").format(sql.SQL(f"{0x90 + n:02x}"))
    return sql.SQL("'\\xdc{}'::bytea").format(sql.SQL(f"{n:04x}"))


def check_key_types(view: FeatureView) -> None:
    for key, dtype in zip(view.entity, view.entity_types or (), strict=False):
        if dtype and normal_type(dtype) not in _KEY_TYPES:
            raise DefinitionError(
                f"{view.versioned_name}: entity key {key} has type {dtype}; online keys need "
                f"text or integer entity columns"
            )


def _unpublished(view: FeatureView, published: sql.Composable) -> sql.Composable:
    """Latest rows whose exact version (keys, feature_ts, created_at) the namespace's table of
    published versions does not hold: an anti-join on the view's own key types. Both sides come
    in key order (the latest rows by `distinct on`, the table by its primary key), so PostgreSQL
    merges them instead of hashing every published row."""
    same = [
        sql.SQL("p.{c} = latest.{c}").format(c=sql.Identifier(c))
        for c in (*view.entity, view.ts_column, view.created_column)
    ]
    return sql.SQL("not exists (select 1 from {p} p where {same})").format(
        p=published, same=sql.SQL(" and ").join(same)
    )


def _latest_to_send(
    view: FeatureView,
    as_of: datetime | None,
    published: sql.Composable | None,
    sparse: bool = False,
) -> tuple[sql.Composable, sql.Composable]:
    """(`latest` CTE body, its filter): each entity's latest row (as of `as_of`), kept when it is
    alive at `now` and, with `published`, when that exact version was not published yet.

    With `published`, the body yields versions only (keys, feature_ts, created_at: see
    `_changed_rows` for the whole rows)."""
    ts = sql.Identifier(view.ts_column)
    where = sql.SQL("where {} <= %(as_of)s").format(ts) if as_of is not None else None
    kept: list[sql.Composable] = []
    if view.ttl is not None:
        # the offline window's inclusive edge: a value with feature_ts = now - ttl is alive
        kept.append(sql.SQL("latest.{ts} >= %(now)s - %(ttl)s").format(ts=ts))
    if published is not None:
        kept.append(_unpublished(view, published))
    filtered = sql.SQL("where ") + sql.SQL(" and ").join(kept) if kept else sql.SQL("")
    if published is not None:
        return latest_versions(view, sparse=sparse), filtered
    return latest_rows(view, where, sparse=sparse), filtered


def _changed_rows(
    view: FeatureView, published: sql.Composable, sparse: bool = False
) -> sql.Composable:
    """The whole rows of the latest versions `published` does not hold (an incremental run):
    the versions are compared first, on the key and version columns alone, and only the rows
    of those that differ are read back by their exact version (one row each, as `latest_rows`
    picks one)."""
    versions, kept = _latest_to_send(view, None, published, sparse)
    keys = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(k)) for k in view.entity)
    same = sql.SQL(" and ").join(
        sql.SQL("r.{c} = latest.{c}").format(c=sql.Identifier(c))
        for c in (*view.entity, view.ts_column, view.created_column)
    )
    # materialized: the comparison runs first, whatever PostgreSQL guesses of its result
    return sql.SQL(
        "with changed as materialized (select * from ({versions}) latest {kept})"
        " select distinct on ({keys}) r.* from changed latest join {table} r on {same}"
        " order by {keys}"
    ).format(
        keys=keys,
        versions=versions,
        table=sql.Identifier(view.schema, view.table),
        same=same,
        kept=kept,
    )


def encoded_latest_sql(
    view: FeatureView,
    namespace: str,
    *,
    as_of: datetime | None,
    published: sql.Composable | None,
    project_now: datetime,
    wall_shift_ms: int,
    sparse: bool = False,
) -> tuple[sql.Composed, dict]:
    """Rows (key, value, expire_ms): the latest row of each entity, encoded.

    `published`: the table of versions this namespace already published (`watermark.published`);
    only entities whose latest version is not in it are read (an incremental run). Entities whose
    latest value is already older than the TTL at `project_now` are left out: no reader would
    serve it. `expire_ms` is 0 for a view without TTL, else the end of the value's
    `codec.lifetime` on the wall clock Redis expires keys by (`wall_shift_ms` maps project time).
    """
    check_key_types(view)
    ts, created = sql.Identifier(view.ts_column), sql.Identifier(view.created_column)
    if published is not None:
        if as_of is not None:
            raise ValueError("an as_of run reads every entity; it compares no published versions")
        latest, kept = _changed_rows(view, published, sparse), sql.SQL("")
    else:
        latest, kept = _latest_to_send(view, as_of, None, sparse)
    tag = sql.SQL(" || '|' || ").join(_key_part(k) for k in view.entity)
    values = sql.SQL(" || ").join(
        [_packed_array_header(len(view.features))]
        + [_packed_value(f.name, f.dtype) for f in view.features]
    )
    if view.ttl is None:
        expire = sql.SQL("0::bigint")
    else:
        # a live value's expiry is after 1970, so integer division is the floor
        expire = sql.SQL("({us} + %(life_us)s) / 1000 + %(shift)s").format(us=_micros(ts))
    query = sql.SQL(
        "with latest as ({latest})"
        " select %(prefix)s || {tag} || %(suffix)s,"
        " {header} || {values},"
        " {expire}"
        " from latest {kept}"
    ).format(
        latest=latest,
        tag=tag,
        header=_header(ts, created),
        values=values,
        expire=expire,
        kept=kept,
    )
    return query, _params(view, namespace, as_of, project_now, wall_shift_ms)


def record_published_sql(
    view: FeatureView,
    namespace: str,
    *,
    published: sql.Composable,
    project_now: datetime,
    sparse: bool = False,
) -> tuple[sql.Composed, dict]:
    """Add to `published` the versions an incremental `encoded_latest_sql` (same arguments)
    selects: each entity's row replaced by its newer version.

    Run in the same repeatable-read snapshot as that query and committed only after Redis
    acknowledged every write, it records exactly what was sent: nothing that Redis does not hold.
    """
    latest, kept = _latest_to_send(view, None, published, sparse)
    columns = version_columns(view)
    keys = key_list(view)
    query = sql.SQL(
        "with latest as ({latest})"
        " insert into {p} ({columns}) select {columns} from latest {kept}"
        " on conflict ({keys}) do update set {ts} = excluded.{ts},"
        " {created} = excluded.{created}"
    ).format(
        latest=latest,
        p=published,
        columns=columns,
        kept=kept,
        keys=keys,
        ts=sql.Identifier(view.ts_column),
        created=sql.Identifier(view.created_column),
    )
    return query, _params(view, namespace, None, project_now, 0)


def published_snapshot_sql(
    view: FeatureView,
    namespace: str,
    *,
    into: sql.Composable,
    project_now: datetime,
    sparse: bool = False,
) -> tuple[sql.Composed, dict]:
    """Create `into`, an unlogged table of the versions a full `encoded_latest_sql` (same
    arguments) selects: one scan, no index to maintain, nothing to delete (a full run's record
    replaces the namespace's table whole; `watermark.swap_published`)."""
    latest, kept = _latest_to_send(view, None, None, sparse)
    query = sql.SQL(
        "create unlogged table {into} as with latest as ({latest})"
        " select {columns} from latest {kept}"
    ).format(into=into, latest=latest, columns=version_columns(view), kept=kept)
    return query, _params(view, namespace, None, project_now, 0)


def _params(
    view: FeatureView,
    namespace: str,
    as_of: datetime | None,
    project_now: datetime,
    wall_shift_ms: int,
) -> dict:
    return {
        "as_of": as_of,
        "namespace": namespace,
        "prefix": f"{namespace}:{{",
        "suffix": f"}}:{view.versioned_name}",
        "ttl": view.ttl,
        "life_us": span_us(lifetime(view.ttl)),
        "now": project_now,
        "shift": wall_shift_ms,
    }
