"""On-demand views from the project's `on_demand/` folder: declarations become feature views, and
a published view finds its function again (refused when the code differs from what was published).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path

from skewless.errors import DefinitionError
from skewless.on_demand.declare import Declaration, code_hash, code_source, declaration
from skewless.on_demand.model import OnDemand
from skewless.registry.model import Feature, FeatureView

FOLDER = "on_demand"
_lock = threading.Lock()
_loaded: dict[tuple, list[Declaration]] = {}


def _folder(project_dir: Path | None) -> Path:
    if project_dir is None:
        from skewless.config import settings

        project_dir = settings().project_dir
    return Path(project_dir) / FOLDER


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")


def stamp(project_dir: Path | None = None) -> tuple:
    """Changes when a file of the on-demand folder changes (caches of the registry key on it)."""
    folder = _folder(project_dir)
    if not folder.is_dir():
        return ()
    return (str(folder), *((p.name, p.stat().st_mtime_ns) for p in _files(folder)))


def declarations(project_dir: Path | None = None) -> list[Declaration]:
    """Every `@on_demand_view` in `<project>/on_demand/*.py`, loaded again when a file changed."""
    folder = _folder(project_dir)
    if not folder.is_dir():
        return []
    key = stamp(project_dir)
    with _lock:
        found = _loaded.get(key)
        if found is None:
            found = _loaded[key] = _load(folder, _files(folder))
    return found


def _load(folder: Path, files: list[Path]) -> list[Declaration]:
    package = "on_demand"
    current = sys.modules.get(package)
    if current is None or list(getattr(current, "__path__", [])) != [str(folder)]:
        # the folder as the package `on_demand` (its __init__ is not needed to find the views)
        module = types.ModuleType(package, "The project's on-demand views.")
        module.__path__ = [str(folder)]
        sys.modules[package] = module
    found: list[Declaration] = []
    seen: dict[tuple[str, int], str] = {}
    for path in files:
        name = f"{package}.{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except DefinitionError:
            raise
        except Exception as exc:
            raise DefinitionError(
                f"{FOLDER}/{path.name} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        for value in vars(module).values():
            found_decl = declaration(value)
            if found_decl is None or getattr(value, "__module__", None) != name:
                continue
            ident = (found_decl.name, found_decl.version)
            if ident in seen:
                raise DefinitionError(
                    f"on-demand view {found_decl.name} version {found_decl.version} is declared "
                    f"twice ({seen[ident]} and {FOLDER}/{path.name})"
                )
            seen[ident] = f"{FOLDER}/{path.name}"
            found.append(found_decl)
    return sorted(found, key=lambda d: (d.name, d.version))


def feature_views(found: list[Declaration], stored: Mapping[str, FeatureView]) -> list[FeatureView]:
    """Declarations as feature views, their inputs resolved against the stored views."""
    views = []
    for d in found:
        entity: dict[str, str] = {}
        upstream: dict[str, None] = {}
        for parameter, ref in d.inputs:
            view_name, _, feature = ref.partition(":")
            view = stored.get(view_name)
            if view is None:
                raise DefinitionError(
                    f"{d.where}: input {parameter} = {ref!r}: unknown feature view version "
                    f"{view_name!r}; known: {', '.join(sorted(stored))}"
                )
            if view.is_on_demand:
                raise DefinitionError(
                    f"{d.where}: input {parameter} = {ref!r} is an on-demand view; inputs are "
                    "stored features"
                )
            if feature not in view.feature_names:
                raise DefinitionError(
                    f"{d.where}: input {parameter} = {ref!r}: {view_name} has no feature "
                    f"{feature!r}; it has: {', '.join(view.feature_names)}"
                )
            for key, key_type in zip(view.entity, view.entity_types, strict=False):
                entity.setdefault(key, key_type)
            upstream[view.versioned_name] = None
        views.append(
            FeatureView(
                name=d.name,
                version=d.version,
                schema="",
                table="",
                entity=tuple(entity),
                entity_types=tuple(entity.values()),
                features=tuple(Feature(n, t, text) for n, t, text in d.outputs),
                ttl=None,
                freshness_sla=None,
                owner=d.owner,
                description=d.description,
                tags=d.tags,
                kind="on_demand",
                upstream=tuple(upstream),
                on_demand=OnDemand(
                    inputs=d.inputs,
                    request=d.request,
                    function=_function_path(d.function),
                    source=code_source(d.function),
                    code_hash=code_hash(d.function),
                    uses_request_time=d.uses_request_time,
                ),
            )
        )
    return views


def _function_path(fn: Callable) -> str:
    return f"{FOLDER}/{fn.__module__.rpartition('.')[2]}.py:{fn.__qualname__}"


_functions: dict[tuple[str, str], Callable] = {}


def bind(view: FeatureView, fn: Callable) -> None:
    """Run `fn` for `view` in this process without looking in `on_demand/` (views declared in a
    notebook or a test); its code must still have the view's fingerprint."""
    assert view.on_demand is not None
    if code_hash(fn) != view.on_demand.code_hash:
        raise DefinitionError(
            f"on-demand view {view.versioned_name}: {fn.__qualname__} has other code"
        )
    _functions[(view.versioned_name, view.on_demand.code_hash)] = fn


def function_for(view: FeatureView, project_dir: Path | None = None) -> Callable:
    """The code of a published on-demand view; DefinitionError when it is gone or differs from
    what was published (the same version must run the same code in training and serving)."""
    assert view.on_demand is not None
    key = (view.versioned_name, view.on_demand.code_hash)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    for d in declarations(project_dir):
        if d.name == view.name and d.version == view.version:
            now = code_hash(d.function)
            same = (
                now == view.on_demand.code_hash
                and d.inputs == view.on_demand.inputs
                and d.request == view.on_demand.request
                and tuple((n, t) for n, t, _ in d.outputs)
                == tuple((f.name, f.dtype) for f in view.features)
            )
            if not same:
                raise DefinitionError(
                    f"on-demand view {view.versioned_name}: the code in {_function_path(d.function)} "
                    f"differs from the published definition (code fingerprint {now}, published "
                    f"{view.on_demand.code_hash}); give it a new version (version={view.version + 1}) "
                    "and publish it (`skewless apply`), so training and serving run one code"
                )
            _functions[key] = d.function
            return d.function
    raise DefinitionError(
        f"on-demand view {view.versioned_name} is published but no function declares it in "
        f"{_folder(project_dir)} (expected {view.on_demand.function}): restore it, or retire the "
        "version by removing it and publishing"
    )
