"""What a stream and an aggregated view are (see the package docstring for the semantics)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from skewless.durations import format_duration
from skewless.errors import DefinitionError
from skewless.sql_types import normal_type

if TYPE_CHECKING:
    from skewless.registry.model import FeatureView

INTEGER_TYPES = frozenset({"bigint", "integer", "smallint"})
FLOAT_TYPES = frozenset({"double precision"})
NUMERIC_TYPES = INTEGER_TYPES | FLOAT_TYPES
STREAM_TYPES = NUMERIC_TYPES | {"boolean", "text"}
"""Payload types: exact on both sides (`real` and `numeric` would round differently in each)."""

FUNCTIONS = ("count", "sum", "mean", "min", "max", "last", "stddev", "share")
"""`share`: the fraction of the window's (filtered) events that also meet `condition`."""

CREATED = "created_at"
"""The event table's ingestion-time column (processing time), stamped by the writer."""


@dataclass(frozen=True)
class Stream:
    """A declared event source; its offline table is `<schema>.<table>`."""

    name: str
    schema: str
    table: str
    keys: tuple[str, ...]
    key_types: tuple[str, ...]
    event_time: str
    event_id: str
    payload: tuple[tuple[str, str], ...]
    """(column, SQL type) of every payload column, in table order."""
    redis_stream: str
    """The Redis Stream (under the namespace: `<namespace>:<redis_stream>`) producers XADD to."""
    lateness: timedelta
    """Events older than this when they arrive are late: still stored and counted, and measured."""
    owner: str = ""
    description: str = ""
    unique_id: str = ""

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def columns(self) -> dict[str, str]:
        """The event table's columns with their types, in table order."""
        cols = dict(zip(self.keys, self.key_types, strict=True))
        cols[self.event_id] = "text"
        cols[self.event_time] = "timestamptz"
        cols.update(self.payload)
        cols[CREATED] = "timestamptz"
        return cols

    @property
    def input_columns(self) -> tuple[str, ...]:
        """What a producer sends: every column but `created_at` (the writer stamps it)."""
        return tuple(c for c in self.columns if c != CREATED)

    @property
    def fingerprint(self) -> str:
        body = json.dumps(
            {
                "keys": [
                    [k, normal_type(t)] for k, t in zip(self.keys, self.key_types, strict=True)
                ],
                "event_time": self.event_time,
                "event_id": self.event_id,
                "payload": [[c, normal_type(t)] for c, t in self.payload],
            },
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]


_OPS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_CONDITION = re.compile(
    r"^\s*(?P<column>[A-Za-z_]\w*)\s*(?:(?P<op><=|>=|!=|<>|=|<|>)\s*(?P<literal>.+?)|"
    r"(?P<null>is\s+(?:not\s+)?null))\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Condition:
    """`column op literal` or `column is [not] null`; NULL never satisfies a comparison (SQL)."""

    column: str
    op: str
    """One of = != < <= > >=, or `is null` / `is not null`."""
    literal: object = None

    def sql(self) -> str:
        from psycopg import sql

        ident = sql.Identifier(self.column).as_string(None)
        if self.op in ("is null", "is not null"):
            return f"{ident} {self.op}"
        # text compares by code point on both sides (Python's str order), whatever the database's
        # collation
        collate = ' collate "C"' if isinstance(self.literal, str) else ""
        return f"{ident}{collate} {self.op} {_sql_literal(self.literal)}"

    def text(self) -> str:
        if self.op in ("is null", "is not null"):
            return f"{self.column} {self.op}"
        return f"{self.column} {self.op} {_sql_literal(self.literal)}"

    def holds(self, value: object) -> bool:
        op = self.op
        if op == "is null":
            return value is None
        if op == "is not null":
            return value is not None
        if value is None:
            return False
        lit = self.literal
        if op == "=":
            return value == lit
        if op == "!=":
            return value != lit
        if op == "<":
            return value < lit
        if op == "<=":
            return value <= lit
        if op == ">":
            return value > lit
        return value >= lit


def _sql_literal(value: object) -> str:
    """A literal as SQL and as the YAML writes it (the two are the same text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def parse_conditions(text: str, columns: dict[str, str], where: str) -> tuple[Condition, ...]:
    """`a >= 15 and kind = 'departure'` against the stream's columns and their types."""
    parts = [p for p in re.split(r"\s+and\s+", str(text).strip(), flags=re.IGNORECASE)]
    found = []
    for part in parts:
        match = _CONDITION.match(part)
        if not match or (match["literal"] or "")[:1] in ("=", "<", ">", "!"):
            raise DefinitionError(
                f"{where}: {part!r} is not `<column> <op> <literal>` (op one of "
                f"{' '.join(_OPS)}) or `<column> is [not] null`; join several with `and`"
            )
        column = match["column"]
        if column not in columns:
            raise DefinitionError(
                f"{where}: {part!r} names column {column!r}, which the stream does not have "
                f"({', '.join(columns)})"
            )
        if match["null"]:
            op = "is not null" if "not" in match["null"].lower() else "is null"
            found.append(Condition(column, op))
            continue
        op = "!=" if match["op"] == "<>" else match["op"]
        found.append(
            Condition(column, op, _literal(match["literal"], columns[column], where, part))
        )
    return tuple(found)


def _literal(text: str, dtype: str, where: str, part: str) -> object:
    dtype = normal_type(dtype)
    text = text.strip()
    if dtype in NUMERIC_TYPES:
        try:
            value = float(text) if re.search(r"[.eE]", text) else int(text)
        except ValueError:
            raise DefinitionError(f"{where}: {part!r}: {text} is not a number ({dtype})") from None
        return value
    if dtype == "boolean":
        if text.lower() not in ("true", "false"):
            raise DefinitionError(f"{where}: {part!r}: {text} is not true or false")
        return text.lower() == "true"
    if dtype == "text":
        if len(text) < 2 or text[0] != "'" or text[-1] != "'":
            raise DefinitionError(f"{where}: {part!r}: a text literal is quoted, e.g. 'departure'")
        return text[1:-1].replace("''", "'")
    raise DefinitionError(f"{where}: {part!r}: conditions on {dtype} columns are not supported")


@dataclass(frozen=True)
class AggFeature:
    """One aggregated feature: `function(column)` over the events of the last `window`."""

    name: str
    function: str
    column: str | None
    """None only for `count` (every event) and `share`."""
    window: timedelta
    dtype: str
    """The output's SQL type (`output_type`)."""
    filter: tuple[Condition, ...] = ()
    condition: tuple[Condition, ...] = ()
    """`share` only: the fraction of filtered events meeting these."""
    description: str = ""

    @property
    def window_us(self) -> int:
        return self.window // timedelta(microseconds=1)

    def describe(self) -> str:
        """`mean(dep_delay) over 1h where kind = 'departure'`: the definition in one line."""
        arg = self.column or "*"
        text = f"{self.function}({arg}) over {format_duration(self.window)}"
        if self.condition:
            text = f"share({' and '.join(c.text() for c in self.condition)}) over {format_duration(self.window)}"
        if self.filter:
            text += " where " + " and ".join(c.text() for c in self.filter)
        return text

    def identity(self) -> list:
        return [
            self.name,
            self.function,
            self.column,
            self.window_us,
            normal_type(self.dtype),
            [c.text() for c in self.filter],
            [c.text() for c in self.condition],
        ]


def output_type(function: str, column_type: str | None) -> str:
    """The SQL type of a function's value over a column of `column_type`."""
    if function == "count":
        return "bigint"
    if function in ("mean", "stddev", "share"):
        return "double precision"
    assert column_type is not None
    kind = normal_type(column_type)
    if function == "sum":
        return "bigint" if kind in INTEGER_TYPES else "double precision"
    if function in ("min", "max", "last"):
        return "double precision" if kind in ("real", "numeric") else kind
    raise DefinitionError(f"unknown aggregation function {function!r}")


@dataclass(frozen=True)
class Aggregation:
    """An aggregated view's definition: the stream it reads and its features."""

    stream: Stream
    features: tuple[AggFeature, ...] = field(default_factory=tuple)

    @property
    def longest_us(self) -> int:
        return max(f.window_us for f in self.features)

    @property
    def needed_columns(self) -> tuple[str, ...]:
        """Payload columns the features read (values and conditions), in table order."""
        wanted = {f.column for f in self.features if f.column}
        wanted |= {c.column for f in self.features for c in (*f.filter, *f.condition)}
        return tuple(c for c in self.stream.columns if c in wanted)

    def identity(self) -> dict:
        return {
            "stream": self.stream.name,
            "stream_fingerprint": self.stream.fingerprint,
            "features": [f.identity() for f in self.features],
        }


def aggregated_view(
    name: str,
    stream: Stream,
    entity: tuple[str, ...],
    features: tuple[AggFeature, ...],
    *,
    owner: str,
    version: int = 1,
    description: str = "",
    ttl: timedelta | None = None,
    freshness_sla: timedelta | None = None,
    stale_policy: str = "null",
    tags: tuple[str, ...] = (),
    unique_id: str = "",
) -> FeatureView:
    """The feature view of an aggregation: its relation is the stream's event table."""
    from skewless.registry.model import Feature, FeatureView  # the registry imports this module

    columns = stream.columns
    return FeatureView(
        name=name,
        version=version,
        schema=stream.schema,
        table=stream.table,
        entity=tuple(entity),
        entity_types=tuple(columns[k] for k in entity),
        features=tuple(Feature(f.name, f.dtype, f.description) for f in features),
        ttl=ttl,
        freshness_sla=freshness_sla,
        owner=owner,
        description=description,
        stale_policy=stale_policy,
        tags=tuple(tags),
        unique_id=unique_id,
        kind="aggregate",
        ts_column=stream.event_time,
        created_column=CREATED,
        upstream=(stream.relation,),
        aggregation=Aggregation(stream, tuple(features)),
    )
