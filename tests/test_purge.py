"""`skewless purge`: a view's online values newer than a time are deleted, atomically per key, the
watermark is reset, and the next materialization puts the real values back (issue 12, point 4c).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from skewless import clock
from skewless.cli import main
from skewless.config import settings
from skewless.online import codec, watermark
from skewless.online.keys import entity_key, view_pattern
from skewless.online.purge import PURGE_SCRIPT, purge_newer
from skewless.online.writer import materialize_view
from skewless.registry import load_registry

FUTURE = datetime(2030, 1, 2, 5, tzinfo=UTC)
VIEW = "carrier_delay_stats_v1"


@pytest.fixture(scope="module")
def view(materialized):
    return load_registry().view(VIEW)


def _values(client, namespace: str) -> dict[bytes, bytes]:
    keys = sorted(client.scan_iter(match=view_pattern(namespace, VIEW), count=10_000))
    return dict(zip(keys, client.mget(keys), strict=True))


def _poison(client, namespace: str, carrier: str, value: bytes) -> str:
    """What the 2030 file did: a value from the future over a real one (which would expire only
    after 2030), and the marker's newest feature_ts moved to it."""
    key = entity_key(namespace, VIEW, [carrier])
    client.set(key, codec.encode(FUTURE, FUTURE, codec.decode_values(value)))
    watermark.advance_newest(client, namespace, VIEW, FUTURE)
    return key


def test_purge_removes_a_future_value_and_the_next_run_puts_the_real_one_back(
    pg, rds, namespace, view
):
    now = clock.now()
    first = materialize_view(pg, rds, namespace, view, now=now)
    assert first.mode == "full" and first.entities > 1
    real = _values(rds, namespace)
    key = _poison(rds, namespace, "UA", real[entity_key(namespace, VIEW, ["UA"]).encode()])

    # newest-wins keeps the value from the future: no run can replace it, not even a full one
    materialize_view(pg, rds, namespace, view, now=now, full_refresh=True)
    assert codec.decode_times(rds.get(key))[0] == FUTURE

    result = purge_newer(rds, namespace, view, now, conn=pg)

    assert (result.scanned, result.purged, result.reset) == (len(real), 1, True)
    assert result.offline_newer == 0
    assert rds.get(key) is None
    assert rds.get(watermark.marker_key(namespace, VIEW)) is None
    assert watermark.read(pg, view.name, view.version, namespace) is None
    again = materialize_view(pg, rds, namespace, view, now=now)
    assert again.mode == "full"
    assert _values(rds, namespace) == real
    # the marker's newest feature_ts is the real one again
    marker = rds.get(watermark.marker_key(namespace, VIEW))
    assert marker[:16].decode() <= codec.time_hex(now)


def test_purge_keeps_values_at_or_before_the_time_and_damaged_ones(rds, namespace, view):
    cut = datetime(2013, 6, 1, tzinfo=UTC)
    at = entity_key(namespace, VIEW, ["AT"])
    before = entity_key(namespace, VIEW, ["BEFORE"])
    after = entity_key(namespace, VIEW, ["AFTER"])
    damaged = entity_key(namespace, VIEW, ["DAMAGED"])
    rds.set(at, codec.encode(cut, cut, [1]))
    rds.set(before, codec.encode(datetime(2013, 5, 1, tzinfo=UTC), cut, [1]))
    rds.set(after, codec.encode(datetime(2013, 6, 1, 0, 0, 0, 1, tzinfo=UTC), cut, [1]))
    rds.set(damaged, b"not a header at all, but long enough to look like one")

    dry = purge_newer(rds, namespace, view, cut, dry_run=True)
    assert (dry.scanned, dry.purged, dry.reset) == (4, 1, False)
    assert rds.exists(after)

    done = purge_newer(rds, namespace, view, cut)
    assert (done.scanned, done.purged) == (4, 1)
    assert [rds.exists(k) for k in (at, before, after, damaged)] == [1, 1, 0, 1]


def test_the_script_judges_the_value_a_key_holds_when_it_runs(rds, namespace):
    """The scan and the delete are apart: a key rewritten meanwhile with a value at or before the
    time (a legitimate write) is kept, because the script reads the header again itself."""
    key = entity_key(namespace, VIEW, ["RACE"])
    cut = datetime(2013, 6, 1, tzinfo=UTC)
    rds.set(key, codec.encode(FUTURE, FUTURE, [1]))
    scanned = list(rds.scan_iter(match=view_pattern(namespace, VIEW)))  # the purge's scan
    rds.set(key, codec.encode(cut, cut, [2]))  # a writer replaces it before the delete
    assert rds.eval(PURGE_SCRIPT, len(scanned), *scanned, codec.time_hex(cut), "1") == 0
    assert codec.decode_values(rds.get(key)) == [2]


def test_the_command_purges_the_session_store_and_a_rerun_repairs_it(pg, rds, view, capsys):
    namespace = settings().namespace
    real = _values(rds, namespace)
    assert real, "the session's build published this view"
    ttls = {k: rds.pttl(k) for k in real}
    key = _poison(rds, namespace, "AA", real[entity_key(namespace, VIEW, ["AA"]).encode()])
    try:
        assert main(["purge", VIEW, "--newer-than", clock.now().isoformat()]) == 0
        said = capsys.readouterr().out
        assert f"{VIEW}: purged 1 of {len(real)} online keys with feature_ts after" in said
        assert "the next materialization is a full refresh" in said
        assert rds.get(key) is None
        assert materialize_view(pg, rds, namespace, view).mode == "full"
        assert _values(rds, namespace) == real
        for k, ttl in ttls.items():  # the same expiries, within the test's run time
            assert (rds.pttl(k) > 0) == (ttl > 0)
    finally:
        for k, value in real.items():
            if rds.get(k) != value:
                rds.set(k, value, px=ttls[k] if ttls[k] > 0 else None)


def test_the_command_wants_a_version_and_a_time_with_an_offset(capsys):
    assert main(["purge", "carrier_delay_stats", "--newer-than", "2013-01-01T00:00Z"]) == 2
    assert "name the version to purge: carrier_delay_stats_v<N>" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["purge", VIEW, "--newer-than", "2013-01-01"])
    assert "needs a UTC offset" in capsys.readouterr().err
