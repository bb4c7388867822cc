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
from skewless.online.codec import OFFSET_US, span_us
from skewless.online.latest import latest_rows
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


def encoded_latest_sql(
    view: FeatureView,
    namespace: str,
    *,
    as_of: datetime | None,
    since: datetime | None,
    project_now: datetime,
    wall_shift_ms: int,
) -> tuple[sql.Composed, dict]:
    """Rows (key, value, expire_ms): the latest row of each entity, encoded.

    `since`: only entities with a row created after it (an incremental run). Entities whose latest
    value is already older than the TTL at `project_now` are left out: their key would be born
    expired. `expire_ms` is 0 for a view without TTL; `wall_shift_ms` maps project time to the
    wall clock Redis expires keys by.
    """
    check_key_types(view)
    keys = [sql.Identifier(k) for k in view.entity]
    key_list = sql.SQL(", ").join(keys)
    ts, created = sql.Identifier(view.ts_column), sql.Identifier(view.created_column)
    table = sql.Identifier(view.schema, view.table)
    conditions: list[sql.Composable] = []
    if as_of is not None:
        conditions.append(sql.SQL("{} <= %(as_of)s").format(ts))
    if since is not None:
        conditions.append(
            sql.SQL("({keys}) in (select {keys} from {table} where {created} > %(since)s)").format(
                keys=key_list, table=table, created=created
            )
        )
    where = sql.SQL("where ") + sql.SQL(" and ").join(conditions) if conditions else sql.SQL("")
    tag = sql.SQL(" || '|' || ").join(_key_part(k) for k in view.entity)
    values = sql.SQL(" || ").join(
        [_packed_array_header(len(view.features))]
        + [_packed_value(f.name, f.dtype) for f in view.features]
    )
    if view.ttl is None:
        expire, alive = sql.SQL("0::bigint"), sql.SQL("")
    else:
        # a live value's expiry is after 1970, so integer division is the floor
        expire = sql.SQL("({us} + %(ttl_us)s) / 1000 + %(shift)s").format(us=_micros(ts))
        alive = sql.SQL("where {ts} >= %(now)s - %(ttl)s").format(ts=ts)
    query = sql.SQL(
        "with latest as ({latest})"
        " select %(prefix)s || {tag} || %(suffix)s,"
        " {header} || {values},"
        " {expire}"
        " from latest {alive}"
    ).format(
        latest=latest_rows(view, where),
        tag=tag,
        header=_header(ts, created),
        values=values,
        expire=expire,
        alive=alive,
    )
    params = {
        "as_of": as_of,
        "since": since,
        "prefix": f"{namespace}:{{",
        "suffix": f"}}:{view.versioned_name}",
        "ttl": view.ttl,
        "ttl_us": span_us(view.ttl),
        "now": project_now,
        "shift": wall_shift_ms,
    }
    return query, params
