"""The landing zone: replay files, the sensor, validation, quarantine and loading in real runs.

Days of December are used (the session's other tests load January) and removed at the end; the
project clock is pinned after them (the session's is in January), except where a test moves it.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance, build_sensor_context

from skewless import clock
from skewless.errors import DataError
from skewless.ingest import nycflights
from skewless.landing import landing_dir, pending_files
from skewless.landing.manifest import manifest_path, write_manifest
from skewless.landing.replay import drop_day, parse_pace, replay
from skewless.landing.validate import InvalidFile, validate_file

D1, D2, D3 = date(2013, 12, 1), date(2013, 12, 2), date(2013, 12, 3)
AFTER_DECEMBER = "2014-01-01T00:00:00-05:00"


@pytest.fixture(autouse=True)
def _clock_after_december(monkeypatch):
    monkeypatch.setenv("SKEWLESS_NOW", AFTER_DECEMBER)


def _rewrite(path, edit, *, manifest: bool = True) -> None:
    """Change a landed file; with `manifest`, as a producer that describes what it wrote."""
    path.write_text(edit(path.read_text()))
    if manifest:
        write_manifest(path, path.parent.name, date.fromisoformat(path.stem))


def _lines(path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _with_field(line: str, index: int, value: str) -> str:
    fields = line.rstrip("\n").split(",")
    fields[index] = value
    return ",".join(fields) + "\n"


CORRUPTIONS = {
    "wrong columns": (
        lambda t: t.replace("dep_delay", "depdelay", 1),
        "missing columns ['dep_delay']",
    ),
    "bad type": (
        lambda t: t.replace("\n", "\nX", 2).replace("\nX", "\n", 1).replace("\nX2013,", "\nabc,"),
        "column year: 1 values are not integers",
    ),
    "unparsable timestamp": (
        lambda t: t.replace("2013-12-01 10:00:00+00:00", "2013-12-01 25:99", 1),
        "column time_hour: 1 unparsable timestamps",
    ),
    "empty": (lambda t: "", "empty file"),
    "header only": (lambda t: t.splitlines()[0] + "\n", "no rows"),
    "other day": (
        lambda t: t.replace("\n2013,12,1,", "\n2013,12,2,", 1),
        "rows are not of 2013-12-01",
    ),
    "ragged row": (lambda t: t.rstrip("\n") + ",1,2,3\n", "not a readable CSV"),
    "null in required": (lambda t: t.replace(",EWR,", ",,", 1), "column origin: 1 empty values"),
    "every row twice": (
        lambda t: t + "".join(t.splitlines(keepends=True)[1:]),
        "rows repeat an earlier row exactly (line",
    ),
    "one row twice": (
        lambda t: t + t.splitlines(keepends=True)[5],
        "1 rows repeat an earlier row exactly (line 989 repeats line 6)",
    ),
    "key repeated": (
        lambda t: t + _with_field(t.splitlines(keepends=True)[5], 3, "999"),
        "1 rows repeat the key (carrier, flight, origin, sched_dep_time) of an earlier row "
        "(line 989: carrier=AA, flight=2243, origin=JFK, sched_dep_time=540)",
    ),
    "date without time": (
        lambda t: t.replace("2013-12-01 13:00:00+00:00", "2013-12-01", 1),
        "column time_hour: 1 unparsable timestamps",
    ),
    "timestamp without offset": (
        lambda t: t.replace("2013-12-01 13:00:00+00:00", "2013-12-01 13:00:00", 1),
        "column time_hour: 1 unparsable timestamps",
    ),
    "time_hour not on the hour": (
        lambda t: t.replace("2013-12-01 13:00:00+00:00", "2013-12-01 13:30:00+00:00", 1),
        "column time_hour: 1 values are not on the hour",
    ),
    "time_hour of another hour": (
        lambda t: t.replace("2013-12-01 13:00:00+00:00", "2013-12-01 03:00:00+00:00", 1),
        "column time_hour: 1 values disagree with the row's local year/month/day/hour",
    ),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_validation_refuses_a_malformed_file_naming_the_problem(tmp_path, kind):
    path = drop_day("flights", D1, tmp_path)
    edit, expected = CORRUPTIONS[kind]
    _rewrite(path, edit)
    with pytest.raises(InvalidFile) as err:
        validate_file(path, "flights", D1)
    assert expected in str(err.value)


def test_a_valid_file_parses_to_the_package_rows(tmp_path):
    for table in ("flights", "weather"):
        frame = validate_file(drop_day(table, D1, tmp_path), table, D1).frame
        expected = nycflights.read_days(table, D1, D1).reset_index(drop=True)
        assert list(frame.columns) == list(expected.columns)
        assert len(frame) == len(expected) > 0
        assert (frame["time_hour"] == expected["time_hour"]).all()


def test_replay_drops_each_day_and_advances_the_clock(tmp_path):
    clock.clear_replay_clock()  # the state folder outlives a test session; the clock never rewinds
    days = []
    written = replay(D1, D3, 0, root=tmp_path, on_day=lambda d, now: days.append((d, now)))
    assert written == 6
    files, misnamed = pending_files(tmp_path)
    assert [(f.table, f.day) for f in files] == [
        (t, d) for d in (D1, D2, D3) for t in ("flights", "weather")
    ]
    assert not misnamed
    assert [now.isoformat() for _, now in days] == [
        "2013-12-02T00:00:00-05:00",
        "2013-12-03T00:00:00-05:00",
        "2013-12-04T00:00:00-05:00",
    ]
    assert parse_pace("2s") == 2 and parse_pace("500ms") == 0.5 and parse_pace("0") == 0


@pytest.fixture
def zone(svc, pg):
    """An empty landing zone; December removed from the raw tables afterwards."""
    from skewless.ingest.raw import ensure_schema

    ensure_schema(pg)
    root = landing_dir()
    shutil.rmtree(root, ignore_errors=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)
    pg.execute("delete from raw.flights where flight_date >= '2013-12-01'")
    pg.execute("delete from raw.weather where obs_date >= '2013-12-01'")
    pg.commit()


def _defs():
    from skewless.orchestrate import load_definitions

    return load_definitions()


def _evaluate(instance, cursor=None):
    defs = _defs()
    sensor = defs.resolve_sensor_def("landing_sensor")
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = sensor.evaluate_tick(context)
    return result.run_requests, result.cursor


def _execute(instance, request):
    job = _defs().resolve_job_def(request.job_name)
    return job.execute_in_process(
        instance=instance,
        tags=request.tags,
        run_config=request.run_config,
        asset_selection=request.asset_selection,
        raise_on_error=False,
    )


def _days_loaded(pg, table):
    column = nycflights.DAILY[table]
    rows = pg.execute(
        f"select {column}, count(*) from raw.{table} where {column} >= '2013-12-01' group by 1"
    ).fetchall()
    return dict(rows)


def test_sensor_loads_each_file_once_and_quarantines_a_bad_one(zone, pg):
    replay(D1, D3, 0)
    bad = zone / "weather" / f"{D2}.csv"
    _rewrite(bad, lambda t: t.replace(":00:00+00:00", "h", 1))
    instance = DagsterInstance.ephemeral()

    requests, cursor = _evaluate(instance)

    reason = zone / "quarantine" / "weather" / f"{D2}.csv.reason.txt"
    assert "column time_hour: 1 unparsable timestamps" in reason.read_text()
    assert not bad.exists()
    ranges = sorted(
        (
            r.tags["dagster/asset_partition_range_start"],
            r.tags["dagster/asset_partition_range_end"],
            tuple(k.path[1] for k in r.asset_selection),
        )
        for r in requests
    )
    assert ranges == [
        ("2013-12-01", "2013-12-01", ("weather",)),
        ("2013-12-01", "2013-12-03", ("flights",)),
        ("2013-12-03", "2013-12-03", ("weather",)),
    ]
    assert len({r.run_key for r in requests}) == 3
    again, _ = _evaluate(instance, cursor)
    assert again == []  # requested files are not requested twice while they wait

    for request in requests:
        assert _execute(instance, request).success
    flights = nycflights.read_days("flights", D1, D3)
    assert _days_loaded(pg, "flights") == flights.groupby("flight_date").size().to_dict()
    assert set(_days_loaded(pg, "weather")) == {D1, D3}
    assert sorted(p.name for p in (zone / "processed" / "flights").iterdir()) == [
        name for d in (D1, D2, D3) for name in (f"{d}.csv", f"{d}.csv.manifest.json")
    ]
    assert pending_files()[0] == []
    assert _evaluate(instance, cursor)[0] == []
    assert _evaluate(instance, None)[0] == []  # nothing waits: a lost cursor loads nothing again


class _Receiver(BaseHTTPRequestHandler):
    posts: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.posts.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_file_gone_bad_before_its_run_fails_it_with_nothing_loaded_and_alerts(
    zone, pg, monkeypatch
):
    from dagster import build_run_status_sensor_context

    from sensors.run_failure_sensor import run_failure_sensor

    replay(D1, D2, 0)
    instance = DagsterInstance.ephemeral()
    (landed,) = _evaluate(instance)[0]
    assert landed.job_name == "land_days"  # both tables landed, no build waits: load and build
    # the same days while a build is running: raw days alone (the build sensor follows)
    from sensors.landing_sensor import raw_run_requests

    (flights_run,) = raw_run_requests(pending_files()[0], build=False)
    assert flights_run.job_name == "raw_days"
    _rewrite(zone / "flights" / f"{D2}.csv", lambda t: t.replace("\n2013,", "\nyear,", 1))

    result = _execute(instance, flights_run)

    assert not result.success
    assert _days_loaded(pg, "flights") == {}  # D1 was valid, but nothing of the run is loaded
    assert (zone / "flights" / f"{D1}.csv").exists()
    assert (zone / "quarantine" / "flights" / f"{D2}.csv.reason.txt").exists()
    retried = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == []  # a bad file is not a transient error

    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.posts.clear()
    monkeypatch.setenv("SKEWLESS_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    try:
        context = build_run_status_sensor_context(
            sensor_name="run_failure_sensor",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        ).for_run_failure()
        run_failure_sensor(context)
    finally:
        server.shutdown()
    (post,) = _Receiver.posts
    assert post["event"] == "run_failure"
    assert post["job"] == "raw_days" and post["run_id"] == result.run_id
    assert [s["step"] for s in post["failed_steps"]] == ["raw__flights"]
    assert f"flights/{D2}.csv" in post["failed_steps"][0]["error"]


def test_a_webhook_that_is_down_does_not_break_the_report(monkeypatch):
    from skewless.alerts import post_json

    said = post_json("http://127.0.0.1:9/hook?token=secret", {"x": 1}, timeout=1)
    assert "unreachable" in said and "secret" not in said


# -- truncation: the manifest beside each file ---------------------------------------------------


def test_replay_writes_a_manifest_that_describes_the_file(tmp_path):
    import hashlib

    path = drop_day("flights", D1, tmp_path)
    body = json.loads(manifest_path(path).read_text())
    data = path.read_bytes()
    rows = len(nycflights.read_days("flights", D1, D1))
    assert body == {
        "table": "flights",
        "day": "2013-12-01",
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    files, misnamed = pending_files(tmp_path)
    assert [f.path for f in files] == [path] and misnamed == []  # the manifest is not a file


TRUNCATIONS = {
    "cut at a line boundary": lambda lines: "".join(lines[: len(lines) // 2]),
    "last field cut": lambda lines: (
        "".join(lines[:-1]) + lines[-1].replace(":00:00+00:00\n", "").replace(" ", "", 1)
    ),
    "last line end missing": lambda lines: "".join(lines).rstrip("\n"),
    "one byte changed": lambda lines: "".join(lines).replace(",JFK,", ",JFQ,", 1),
}


@pytest.mark.parametrize("kind", sorted(TRUNCATIONS))
def test_a_file_that_differs_from_its_manifest_is_refused(tmp_path, kind):
    path = drop_day("flights", D1, tmp_path)
    path.write_text(TRUNCATIONS[kind](_lines(path)))
    with pytest.raises(InvalidFile, match="differs from its manifest|manifest says"):
        validate_file(path, "flights", D1)


def test_a_whole_file_with_a_wrong_row_count_in_its_manifest_is_refused(tmp_path):
    path = drop_day("weather", D1, tmp_path)
    body = json.loads(manifest_path(path).read_text())
    manifest_path(path).write_text(json.dumps({**body, "rows": body["rows"] + 1}))
    with pytest.raises(InvalidFile, match=f"{body['rows']} rows, its manifest says"):
        validate_file(path, "weather", D1)


def test_a_file_without_a_manifest_is_refused_unless_manifests_are_optional(tmp_path, monkeypatch):
    path = drop_day("flights", D1, tmp_path)
    manifest_path(path).unlink()
    with pytest.raises(InvalidFile, match=f"no manifest {D1}.csv.manifest.json beside it"):
        validate_file(path, "flights", D1)
    monkeypatch.setenv("SKEWLESS_LANDING_MANIFEST", "optional")
    assert len(validate_file(path, "flights", D1).frame) > 0
    # without a manifest, a cut inside a line is still caught (a cut at a line boundary is not)
    path.write_text(TRUNCATIONS["last field cut"](_lines(path)))
    with pytest.raises(InvalidFile, match="truncated: the last line has no line end"):
        validate_file(path, "flights", D1)
    monkeypatch.setenv("SKEWLESS_LANDING_MANIFEST", "sometimes")
    with pytest.raises(ValueError, match="SKEWLESS_LANDING_MANIFEST"):
        validate_file(path, "flights", D1)


def test_quarantine_moves_the_manifest_with_its_file(tmp_path):
    from skewless.landing import quarantine

    path = drop_day("flights", D1, tmp_path)
    moved = quarantine(path, "flights", "test", tmp_path)
    assert manifest_path(moved).exists() and not manifest_path(path).exists()


# -- days outside the partitions or after the clock -----------------------------------------------


def _day_file(root, table: str, source: date, target: date):
    """A well-formed file (and manifest) for `target`: `source`'s rows, moved whole in time."""
    frame = nycflights.read_days(table, source, source).drop(columns=[nycflights.DAILY[table]])
    shift = pd.Timedelta(days=(target - source).days)
    frame = frame.assign(
        year=target.year,
        month=target.month,
        day=target.day,
        time_hour=frame["time_hour"] + shift,
    )
    path = root / table / f"{target}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, na_rep="NA")
    write_manifest(path, table, target)
    return path


def test_validation_refuses_a_day_outside_the_partitions_or_not_over_by_the_clock(tmp_path):
    from assets.raw import PARTITION_DAYS

    first, last = PARTITION_DAYS
    assert (first, last) == (date(2013, 1, 1), date(2013, 12, 31))
    future = _day_file(tmp_path, "flights", D1, date(2030, 1, 1))
    with pytest.raises(InvalidFile, match=r"day 2030-01-01 is outside the partitions"):
        validate_file(future, "flights", date(2030, 1, 1), first=first, last=last)
    early = _day_file(tmp_path, "weather", D1, date(2012, 12, 31))
    with pytest.raises(InvalidFile, match=r"outside the partitions \(2013-01-01..2013-12-31\)"):
        validate_file(early, "weather", date(2012, 12, 31), first=first, last=last)
    path = drop_day("flights", D3, tmp_path)
    noon = clock._parse("2013-12-03T12:00:00-05:00", "test")
    with pytest.raises(InvalidFile, match="day 2013-12-03 is not over by the project clock"):
        validate_file(path, "flights", D3, now=noon)
    # the day is over at midnight in New York: from then on it is loaded
    midnight = clock._parse("2013-12-04T00:00:00-05:00", "test")
    assert len(validate_file(path, "flights", D3, now=midnight).frame) > 0


def test_rows_after_the_clock_are_refused(tmp_path):
    """A row stamped later than the clock, in a file whose day is over (the clock check on rows
    holds even for a file whose day check was passed with an earlier `now`)."""
    from skewless.landing.validate import _check_times

    path = drop_day("weather", D1, tmp_path)
    frame = validate_file(path, "weather", D1).frame
    raw = pd.read_csv(path, dtype=str)
    with pytest.raises(InvalidFile, match="values after the project clock"):
        _check_times(
            frame.drop(columns=["obs_date"]), raw, frame["time_hour"].min().to_pydatetime()
        )


def _raw_count(pg, table: str) -> int:
    return pg.execute(f"select count(*) from raw.{table}").fetchone()[0]


def test_the_sensor_quarantines_a_future_dated_file_and_requests_no_run(zone, pg, monkeypatch):
    monkeypatch.setenv("SKEWLESS_NOW", "2013-12-03T00:00:00-05:00")
    future = _day_file(zone, "flights", D1, date(2030, 1, 1))
    tomorrow = _day_file(zone, "weather", D1, D3)  # in the partitions, but not over yet
    today = drop_day("flights", D2, zone)
    instance = DagsterInstance.ephemeral()

    requests, _ = _evaluate(instance)

    assert [r.tags["dagster/asset_partition_range_start"] for r in requests] == ["2013-12-02"]
    assert not future.exists() and not tomorrow.exists() and today.exists()
    reasons = {p.name: p.read_text() for p in (zone / "quarantine").rglob("*.reason.txt")}
    assert (
        "day 2030-01-01 is outside the partitions (2013-01-01..2013-12-31)"
        in (reasons["2030-01-01.csv.reason.txt"])
    )
    assert "day 2013-12-03 is not over by the project clock" in reasons["2013-12-03.csv.reason.txt"]
    assert (zone / "quarantine" / "flights" / "2030-01-01.csv.manifest.json").exists()


def test_the_loader_refuses_a_day_outside_the_partitions_before_anything_commits(zone, pg):
    from assets.raw import PARTITION_DAYS
    from skewless.landing.load import load_landed_days

    future = date(2030, 1, 1)
    path = _day_file(zone, "flights", D1, future)
    before = _raw_count(pg, "flights")
    with pytest.raises(DataError, match="outside the partitions"):
        load_landed_days(pg, "flights", future, future, partitions=PARTITION_DAYS)
    pg.rollback()
    assert _raw_count(pg, "flights") == before
    assert not path.exists()
    assert (zone / "quarantine" / "flights" / f"{future}.csv.reason.txt").exists()


# -- the replay clock moves after the data ---------------------------------------------------------


def test_a_load_that_fails_midway_leaves_the_replay_clock_where_it_was(zone, pg):
    from skewless.orchestrate import materialize_days

    clock.clear_replay_clock()
    before = clock.advance_replay_clock(clock._parse("2013-11-30T00:00:00-05:00", "test"))
    pg.execute(
        "create or replace function pg_temp_fail_dec2() returns trigger language plpgsql as $$"
        " begin if new.flight_date = date '2013-12-02' then"
        " raise exception 'disk gone midway through the load'; end if; return new; end $$"
    )
    pg.execute(
        "create trigger fail_dec2 before insert on raw.flights for each row"
        " execute function pg_temp_fail_dec2()"
    )
    pg.commit()
    try:
        results = materialize_days(D1, D3)
    finally:
        pg.execute("drop trigger if exists fail_dec2 on raw.flights")
        pg.execute("drop function if exists pg_temp_fail_dec2()")
        pg.commit()
        clock._cache = (-1.0, None)
    assert [r.dagster_run.job_name for r in results] == ["raw_days"]
    assert not results[0].success
    assert _days_loaded(pg, "flights") == {}
    assert clock.replay_clock() == before
    clock.clear_replay_clock()


def test_replayed_days_are_over_by_the_clock_when_the_sensor_sees_them(zone, pg, monkeypatch):
    """replay moves the clock before a day's files land, and the sensor re-reads the clock: a
    sensor process that read it a moment before the move still accepts the new day."""
    import time

    monkeypatch.delenv("SKEWLESS_NOW")
    clock.clear_replay_clock()
    earlier = clock.advance_replay_clock(clock._parse("2013-11-30T00:00:00-05:00", "test"))
    try:
        replay(D1, D1, 0)
        assert clock.replay_clock(fresh=True).isoformat() == "2013-12-02T00:00:00-05:00"
        _defs()  # loaded before: the evaluation below takes well under the clock's reread time
        clock._cache = (time.monotonic(), earlier)  # another process's reading, just before
        requests, _ = _evaluate(DagsterInstance.ephemeral())
    finally:
        clock.clear_replay_clock()
    (request,) = requests  # both tables of the day, loaded and built in one run
    assert request.job_name == "land_days"
    assert request.run_config["ops"] == {
        f"raw__{t}": {"config": {"from_landing": True}} for t in ("flights", "weather")
    }
    assert not (zone / "quarantine").exists()
