"""Planner statistics: a load counts its rows, the build analyzes what a tenth of was loaded."""

from datetime import date, timedelta

import pandas as pd
import pytest

from skewless.ingest import raw, statistics
from skewless.ingest.copy import replace_rows

TABLE = "stats_test.days"


@pytest.fixture
def table(pg):
    raw.ensure_schema(pg)
    pg.execute("drop schema if exists stats_test cascade")
    pg.execute("create schema stats_test")
    pg.execute(f"create table {TABLE} (day date not null, x bigint)")
    pg.commit()
    yield TABLE
    pg.rollback()
    pg.execute("drop schema if exists stats_test cascade")
    pg.execute("delete from raw.rows_since_analyze where table_name = %s", (TABLE,))
    pg.commit()


def _load(pg, day: date, rows: int) -> None:
    frame = pd.DataFrame({"day": [day] * rows, "x": range(rows)})
    replace_rows(pg, TABLE, frame, date_column="day", first=day, last=day)
    pg.commit()


def _pending(pg) -> int | None:
    row = pg.execute(
        "select rows from raw.rows_since_analyze where table_name = %s", (TABLE,)
    ).fetchone()
    return None if row is None else row[0]


def _estimate(pg) -> float:
    return pg.execute(
        "select reltuples from pg_class where oid = %s::regclass", (TABLE,)
    ).fetchone()[0]


def test_loads_are_counted_and_analyzed_past_a_tenth(pg, table):
    first = date(2013, 1, 1)
    _load(pg, first, 1000)
    _load(pg, first, 1000)  # a reload counts again: its rows were written again
    assert _pending(pg) == 2000
    assert _estimate(pg) < 0  # never analyzed: the loader itself does not
    assert TABLE in statistics.refresh(pg)
    pg.commit()
    assert _pending(pg) is None and _estimate(pg) == 1000

    _load(pg, first + timedelta(days=1), 60)
    assert TABLE not in statistics.refresh(pg)  # 60 of 1,000: the statistics still hold
    pg.commit()
    assert _pending(pg) == 60 and _estimate(pg) == 1000

    _load(pg, first + timedelta(days=2), 50)  # 110 since the last ANALYZE: a tenth
    assert TABLE in statistics.refresh(pg)
    pg.commit()
    assert _pending(pg) is None and _estimate(pg) == 1110


def test_a_failed_load_counts_nothing(pg, table):
    frame = pd.DataFrame({"day": [date(2013, 1, 1), date(2013, 1, 1)], "x": [1, "x"]})
    with pytest.raises(Exception, match="bigint"):
        replace_rows(pg, TABLE, frame)
    pg.rollback()
    assert _pending(pg) is None


def test_a_dropped_table_is_forgotten(pg, table):
    _load(pg, date(2013, 1, 1), 10)
    pg.execute("drop schema stats_test cascade")
    pg.commit()
    assert TABLE not in statistics.refresh(pg)
    pg.commit()
    assert _pending(pg) is None
