"""dbt's saved parse holds for one connection profile: each server keeps a parse target of its own."""

import pytest

from skewless.config import settings
from skewless.dbt import database_name, target_dir


@pytest.fixture
def fresh_settings():
    settings.cache_clear()
    yield
    settings.cache_clear()


def _target(monkeypatch, tmp_path, **env):
    for name in ("SKEWLESS_STATE_DIR", "SKEWLESS_POSTGRES_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    return target_dir(tmp_path)


def test_a_parse_target_per_database_and_server(monkeypatch, tmp_path, fresh_settings):
    first = _target(monkeypatch, tmp_path, SKEWLESS_STATE_DIR=str(tmp_path / "a"))
    assert first.parent == tmp_path / "target" and first.name.startswith(f"{database_name()}-")
    # the same target before and after the embedded server started (it sets the connection's
    # variables): definitions read the manifest ensure_manifest made, builds its saved parse
    monkeypatch.setenv("SKEWLESS_PG_HOST", str(tmp_path / "a" / "postgres"))
    monkeypatch.setenv("SKEWLESS_PG_PORT", "5432")
    assert target_dir(tmp_path) == first
    # another state folder's server (same database name): dbt would find "profile has changed"
    # in the other's saved parse and parse the whole project at every build
    second = _target(monkeypatch, tmp_path, SKEWLESS_STATE_DIR=str(tmp_path / "b"))
    assert second != first
    external = _target(
        monkeypatch, tmp_path, SKEWLESS_POSTGRES_URL="postgresql://me@db.example:5433/skewless"
    )
    other_user = _target(
        monkeypatch, tmp_path, SKEWLESS_POSTGRES_URL="postgresql://you@db.example:5433/skewless"
    )
    assert len({first, second, external, other_user}) == 4


def test_a_parse_made_before_the_server_was_known_is_redone_once_it_is(monkeypatch, tmp_path):
    """Definitions load before the server starts (placeholder profile) and builds run after: a
    build pointed at the placeholder parse would find "profile has changed" and parse it all."""
    from skewless import dbt

    manifest, stamp = tmp_path / "manifest.json", tmp_path / "sources.sha256"
    manifest.write_text("{}")
    monkeypatch.delenv("SKEWLESS_PG_HOST", raising=False)
    stamp.write_text(f"abc\n{dbt._profile()}\n")
    assert dbt._is_current(manifest, stamp, "abc", for_builds=True)
    assert not dbt._is_current(manifest, stamp, "changed sources", for_builds=True)
    monkeypatch.setenv("SKEWLESS_PG_HOST", "/state/postgres")
    assert not dbt._is_current(manifest, stamp, "abc", for_builds=True)
    # readers of the definitions (registry, plan, serve's watch) take it as it is
    assert dbt._is_current(manifest, stamp, "abc", for_builds=False)
    assert not dbt._is_current(manifest, stamp, "changed sources", for_builds=False)
    stamp.write_text(f"abc\n{dbt._profile()}\n")
    assert dbt._is_current(manifest, stamp, "abc", for_builds=True)
    # a reader with no server yet takes the real server's parse as it is (no parse back and forth)
    monkeypatch.delenv("SKEWLESS_PG_HOST")
    assert dbt._is_current(manifest, stamp, "abc", for_builds=True)
    monkeypatch.setenv("SKEWLESS_PG_HOST", "/other/postgres")
    assert not dbt._is_current(manifest, stamp, "abc", for_builds=True)
