"""`@on_demand_view`: declare a request-time feature view, and fingerprint its code.

The fingerprint covers what the function runs: its own source (from `def`, so decorator
arguments such as a description can change without a new version), and, by name, the
module-level functions, classes and constants it uses, recursively. A change to any of them
changes the view's fingerprint, so plan refuses it under an unchanged version and serving refuses
to run code that differs from what was published.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from skewless.errors import DefinitionError
from skewless.on_demand.model import OUTPUT_TYPES, REQUEST_TIME, REQUEST_TYPES

ATTRIBUTE = "__skewless_on_demand__"


@dataclass(frozen=True)
class Declaration:
    """What the decorator was told, checked; the registry turns it into a FeatureView."""

    name: str
    version: int
    owner: str
    description: str
    inputs: tuple[tuple[str, str], ...]
    request: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str, str], ...]
    """(name, type, description)"""
    tags: tuple[str, ...]
    function: Callable
    where: str
    uses_request_time: bool


def on_demand_view(
    *,
    version: int,
    owner: str,
    description: str,
    outputs: Mapping[str, str | tuple[str, str]],
    inputs: Mapping[str, str] | None = None,
    request: Mapping[str, str] | None = None,
    name: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
) -> Callable[[Callable], Callable]:
    """Declare the decorated function as on-demand view `name` (default: the function's name).

    `inputs` maps parameters to stored features (`<view>_v<N>:<feature>`), `request` maps
    parameters to request field types (`timestamp`, `float`, `int`, `bool`, `text`), and a
    parameter `request_time` gets the time of the request. `outputs` maps each output to its
    type, or to (type, description). The function takes numpy arrays (see
    `skewless.on_demand.columns` for NULLs and types) and returns a dict of output arrays; it must
    be row-wise: an output row depends on its input row only.
    """

    def wrap(fn: Callable) -> Callable:
        setattr(
            fn,
            ATTRIBUTE,
            _declaration(
                fn, name, version, owner, description, outputs, inputs or {}, request or {}, tags
            ),
        )
        return fn

    return wrap


def _declaration(
    fn, name, version, owner, description, outputs, inputs, request, tags
) -> Declaration:
    view = name or fn.__name__
    where = f"on-demand view {view} ({fn.__module__}.{fn.__qualname__})"
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DefinitionError(f"{where}: version must be a positive integer, got {version!r}")
    if not str(owner).strip():
        raise DefinitionError(f"{where}: owner is required (a team or an email)")
    if not outputs:
        raise DefinitionError(f"{where}: outputs lists no output")
    params = list(inspect.signature(fn).parameters)
    declared = [*inputs, *request]
    for parameter in declared:
        if parameter == REQUEST_TIME:
            raise DefinitionError(
                f"{where}: {REQUEST_TIME!r} is filled in by Skewless (the time of the request); "
                "do not declare it in inputs or request"
            )
    both = sorted(set(inputs) & set(request))
    if both:
        raise DefinitionError(
            f"{where}: {', '.join(both)} declared both as input and request field"
        )
    expected = set(declared) | ({REQUEST_TIME} if REQUEST_TIME in params else set())
    if set(params) != expected:
        missing = sorted(expected - set(params))
        extra = sorted(set(params) - expected)
        raise DefinitionError(
            f"{where}: the function's parameters must be its inputs and request fields"
            + (f"; it lacks {', '.join(missing)}" if missing else "")
            + (f"; {', '.join(extra)} are not declared in inputs or request" if extra else "")
        )
    for parameter, ref in inputs.items():
        if not isinstance(ref, str) or ref.count(":") != 1 or "_v" not in ref.split(":")[0]:
            raise DefinitionError(
                f"{where}: input {parameter} = {ref!r} is not `<view>_v<N>:<feature>` (inputs pin a "
                "view version)"
            )
    checked_request = []
    for field, dtype in request.items():
        sql_type = REQUEST_TYPES.get(str(dtype).strip().lower())
        if sql_type is None:
            raise DefinitionError(
                f"{where}: request field {field} has type {dtype!r}; types are: "
                "timestamp, float, int, bool, text"
            )
        checked_request.append((field, sql_type))
    checked_outputs = []
    for output, spec in outputs.items():
        dtype, text = (spec, "") if isinstance(spec, str) else tuple(spec)
        sql_type = OUTPUT_TYPES.get(str(dtype).strip().lower())
        if sql_type is None:
            raise DefinitionError(
                f"{where}: output {output} has type {dtype!r}; types are: float, int, bool, text"
            )
        if not output.isidentifier():
            raise DefinitionError(f"{where}: output name {output!r} is not an identifier")
        checked_outputs.append((output, sql_type, str(text)))
    return Declaration(
        name=view,
        version=version,
        owner=str(owner).strip(),
        description=str(description).strip(),
        inputs=tuple((p, r.strip()) for p, r in inputs.items()),
        request=tuple(checked_request),
        outputs=tuple(checked_outputs),
        tags=tuple(tags),
        function=fn,
        where=where,
        uses_request_time=REQUEST_TIME in params,
    )


def declaration(fn: object) -> Declaration | None:
    return getattr(fn, ATTRIBUTE, None)


# -- the code fingerprint ------------------------------------------------------------------------


def code_source(fn: Callable) -> str:
    """The function's source from `def` on, then each module-level name it uses (recursively):
    functions and classes by source, constants by value, modules by name."""
    parts = [_own_source(fn)]
    seen: set[str] = set()
    pending = list(_names(fn.__code__))
    module = fn.__module__
    scope = fn.__globals__
    while pending:
        name = pending.pop(0)
        if name in seen or name not in scope:
            continue
        seen.add(name)
        value = scope[name]
        if isinstance(value, types.ModuleType):
            parts.append(f"# {name} = module {value.__name__}")
        elif isinstance(value, types.FunctionType) and value.__module__ == module:
            parts.append(_own_source(value))
            pending.extend(_names(value.__code__))
        elif isinstance(value, type) and value.__module__ == module:
            parts.append(textwrap.dedent(inspect.getsource(value)))
        elif callable(value):
            parts.append(
                f"# {name} = {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', name)}"
            )
        else:
            parts.append(f"{name} = {_stable_repr(value)}")
    return "\n\n".join(parts)


def code_hash(fn: Callable) -> str:
    return hashlib.sha256(code_source(fn).encode()).hexdigest()[:16]


def _own_source(fn: Callable) -> str:
    """Source from the `def` line (decorators left out), trailing spaces stripped."""
    lines, first = inspect.getsourcelines(fn)
    text = textwrap.dedent("".join(lines))
    tree = ast.parse(text)
    node = tree.body[0]
    start = node.lineno - 1  # the def line, after any decorator
    body = text.splitlines()[start : node.end_lineno]
    return "\n".join(line.rstrip() for line in body)


def _names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_names(const))
    return names


def _stable_repr(value: object) -> str:
    if isinstance(value, set | frozenset):
        return f"{type(value).__name__}({sorted(map(_stable_repr, value))})"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"{_stable_repr(k)}: {_stable_repr(v)}"
                for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))
            )
            + "}"
        )
    if isinstance(value, list | tuple):
        return f"{type(value).__name__}({[_stable_repr(v) for v in value]})"
    return repr(value)
