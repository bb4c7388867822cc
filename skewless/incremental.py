"""What the latest incremental build of a feature view rewrote (dbt_project/macros/incremental_days.sql).

Checks that scan a whole table to prove something about the rows a build wrote (the no-leakage
tests, the quality suite) look at those rows only: the rows a build left alone were checked when
they were written, and a daily build would otherwise cost more every day.
"""

from __future__ import annotations

import psycopg


def rows_written(conn: psycopg.Connection, schema: str, table: str) -> str | None:
    """The feature_ts ranges the view's latest build rewrote, as a tstzmultirange literal
    (`{}` when it changed nothing); None when every row counts (a full build, or a view that does
    not build incrementally)."""
    if conn.execute("select to_regclass('raw.build_state')").fetchone()[0] is None:
        return None
    row = conn.execute(
        "select rows_written::text from raw.build_state where model = %s", (f"{schema}.{table}",)
    ).fetchone()
    return row[0] if row else None
