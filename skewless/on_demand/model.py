"""What an on-demand view is, beyond a feature view's name, version, outputs and metadata."""

from __future__ import annotations

from dataclasses import dataclass

REQUEST_TIME = "request_time"
"""A parameter of this name receives the time of the request: the `now` a read judges values at
online, the spine row's timestamp in training. It is never sent in request data."""

_TYPES = {
    "timestamp": "timestamptz",
    "timestamptz": "timestamptz",
    "timestamp with time zone": "timestamptz",
    "float": "double precision",
    "double": "double precision",
    "double precision": "double precision",
    "float8": "double precision",
    "real": "double precision",
    "int": "bigint",
    "integer": "bigint",
    "bigint": "bigint",
    "int8": "bigint",
    "bool": "boolean",
    "boolean": "boolean",
    "str": "text",
    "string": "text",
    "text": "text",
}
REQUEST_TYPES = _TYPES
"""Types a request field may declare (spellings -> the type it is)."""
OUTPUT_TYPES = {k: v for k, v in _TYPES.items() if v != "timestamptz"}
"""Types an output may declare: numbers, booleans and text (the types a training set and a served
vector both carry the same way)."""


@dataclass(frozen=True)
class OnDemand:
    """An on-demand view's inputs and code. `inputs` map the function's parameters to stored
    features (`<view>_v<N>:<feature>`); `request` maps the others to request field types."""

    inputs: tuple[tuple[str, str], ...]
    request: tuple[tuple[str, str], ...]
    function: str
    """`<module>:<qualname>` of the function in the project's `on_demand/` folder."""
    source: str
    """The code the fingerprint covers: the function and the module-level code it uses."""
    code_hash: str
    uses_request_time: bool = False

    def identity(self) -> dict:
        return {
            "inputs": [list(p) for p in self.inputs],
            "request": [list(p) for p in self.request],
            "request_time": self.uses_request_time,
            "code": self.code_hash,
        }

    def document(self) -> dict:
        """Everything about it, as JSON (the published registry and the registry tables)."""
        return {
            "inputs": [list(p) for p in self.inputs],
            "request": [list(p) for p in self.request],
            "function": self.function,
            "source": self.source,
            "code_hash": self.code_hash,
            "uses_request_time": self.uses_request_time,
        }

    @classmethod
    def from_document(cls, doc: dict) -> OnDemand:
        return cls(
            inputs=tuple((p, r) for p, r in doc["inputs"]),
            request=tuple((f, t) for f, t in doc["request"]),
            function=doc["function"],
            source=doc["source"],
            code_hash=doc["code_hash"],
            uses_request_time=bool(doc["uses_request_time"]),
        )

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(ref for _, ref in self.inputs)
