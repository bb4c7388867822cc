"""Raw ingestion: COPY by day, a reload leaves one copy, a failed load leaves the old one."""

from datetime import date

import pandas as pd
import pytest

from skewless.ingest import nycflights, raw
from skewless.ingest.copy import replace_rows


@pytest.fixture(autouse=True)
def _leave_no_days_behind(svc):
    """The days loaded here (June to August) are after the session's clock: left in the shared
    raw tables, a later build would derive feature rows from the future (refused by
    `no_future_values`) and the other tests would see them."""
    import psycopg

    yield
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        for table, column in nycflights.DAILY.items():
            if conn.execute("select to_regclass(%s)", (f"raw.{table}",)).fetchone()[0] is None:
                continue
            conn.execute(
                f"delete from raw.{table} where {column} between '2013-06-01' and '2013-08-31'"
            )


def _count(pg, table: str, column: str, first: date, last: date) -> int:
    return pg.execute(
        f"select count(*) from raw.{table} where {column} between %s and %s", (first, last)
    ).fetchone()[0]


@pytest.mark.parametrize("table", ["flights", "weather"])
def test_loading_a_partition_twice_leaves_one_copy(pg, table):
    column = nycflights.DAILY[table]
    first, last = date(2013, 6, 1), date(2013, 6, 2)
    expected = len(nycflights.read_days(table, first, last))
    assert expected > 0
    raw.load_days(pg, table, first, last)
    raw.load_days(pg, table, first, last)
    raw.load_days(pg, table, date(2013, 6, 2), date(2013, 6, 2))
    assert _count(pg, table, column, first, last) == expected
    pg.commit()


def test_flight_rows_match_the_source_file(pg):
    day = date(2013, 7, 4)
    raw.load_days(pg, "flights", day, day)
    source = nycflights.read_days("flights", day, day)
    rows = pg.execute(
        "select carrier, flight, dep_delay, tailnum, time_hour from raw.flights"
        " where flight_date = %s order by carrier, flight, time_hour",
        (day,),
    ).fetchall()
    expected = source.sort_values(["carrier", "flight", "time_hour"])
    assert len(rows) == len(expected)
    for row, (_, src) in zip(rows, expected.iterrows(), strict=True):
        assert row[0] == src.carrier and row[1] == src.flight
        assert (row[2] is None) == pd.isna(src.dep_delay)
        assert row[2] is None or row[2] == pytest.approx(src.dep_delay)
        assert row[4] == src.time_hour.to_pydatetime()
    pg.commit()


def test_a_failed_load_keeps_the_previous_copy(pg):
    day = date(2013, 8, 1)
    raw.load_days(pg, "flights", day, day)
    before = _count(pg, "flights", "flight_date", day, day)
    broken = nycflights.read_days("flights", day, day).copy()
    broken["dep_time"] = broken["dep_time"].astype("object")
    broken.loc[broken.index[-1], "dep_time"] = "not-a-time"  # fails on the last chunk's last row
    with pytest.raises(Exception, match="integer"):
        replace_rows(pg, "raw.flights", broken, date_column="flight_date", first=day, last=day)
    pg.rollback()
    assert _count(pg, "flights", "flight_date", day, day) == before


def test_dimensions_load_whole(pg):
    for name in raw.DIMENSIONS:
        raw.load_dimension(pg, name)
        raw.load_dimension(pg, name)
        count = pg.execute(f"select count(*) from raw.{name}").fetchone()[0]
        assert count == len(nycflights.read_table(name))
    pg.commit()


@pytest.mark.parametrize("table", ["flights", "weather"])
def test_streamed_days_equal_the_typed_source(pg, table):
    """`load_days` streams the source file through Arrow; every column lands as the pandas
    reading of the same file has it (NULLs, integers, doubles to the bit, instants)."""
    column = nycflights.DAILY[table]
    first, last = date(2013, 6, 30), date(2013, 7, 1)
    raw.load_days(pg, table, first, last)
    source = nycflights.read_days(table, first, last).reset_index(drop=True)
    names = list(source.columns)
    rows = pg.execute(
        f"select {', '.join(names)} from raw.{table} where {column} between %s and %s",
        (first, last),
    ).fetchall()
    assert len(rows) == len(source)

    def key(values) -> tuple:
        return tuple("" if v is None or v is pd.NA or v != v else str(v) for v in values)

    landed = sorted((tuple(None if v is None else v for v in row) for row in rows), key=key)
    expected = sorted(
        (
            tuple(None if pd.isna(v) else v for v in rec)
            for rec in source.astype(object).itertuples(index=False, name=None)
        ),
        key=key,
    )
    for got, want in zip(landed, expected, strict=True):
        for name, g, w in zip(names, got, want, strict=True):
            if w is None:
                assert g is None, name
            elif name == "time_hour":
                assert g == w.to_pydatetime(), name
            else:
                assert g == w, name
    pg.commit()
