"""Planner statistics of loaded tables, refreshed by the build that reads them.

A load counts the rows it wrote (`count_rows`, in the load's transaction); the build, before it
plans a query, ANALYZEs every table a tenth or more of which was loaded since (`refresh`), as
autovacuum would, but now. Without it a build that follows a load of a year runs before
autovacuum wakes, and PostgreSQL plans the no-leakage tests' joins as nested loops (25 s instead
of 2 s on a year). The load itself stays a load: ANALYZE of a year of flights costs 0.15 s,
which a day's landing never needs.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

SHARE = 0.1
"""A table is analyzed once this share of its rows (as of its last ANALYZE) was loaded."""


def count_rows(conn: psycopg.Connection, table: str, rows: int) -> None:
    """Record, in the caller's transaction, that `rows` were loaded into `table` ("schema.name")."""
    conn.execute(
        "insert into raw.rows_since_analyze (table_name, rows) values (%s, %s)"
        " on conflict (table_name) do update"
        " set rows = raw.rows_since_analyze.rows + excluded.rows",
        (table, rows),
    )


def refresh(conn: psycopg.Connection) -> list[str]:
    """ANALYZE the tables loaded enough since their last ANALYZE (or never analyzed); returns
    them. Rows locked while it runs: a load committing meanwhile counts again afterwards."""
    analyzed = []
    with conn.transaction():
        pending = conn.execute(
            "select p.table_name, p.rows, c.reltuples"
            " from raw.rows_since_analyze p left join pg_class c"
            " on c.oid = to_regclass(p.table_name)"
            " order by p.table_name for update of p"
        ).fetchall()
        for table, rows, estimate in pending:
            if estimate is None:  # the table is gone (a dropped bench or test schema)
                conn.execute("delete from raw.rows_since_analyze where table_name = %s", (table,))
                continue
            if estimate >= 0 and rows < SHARE * estimate:
                continue
            conn.execute(sql.SQL("analyze {}").format(sql.Identifier(*table.split("."))))
            conn.execute("delete from raw.rows_since_analyze where table_name = %s", (table,))
            analyzed.append(table)
    return analyzed
