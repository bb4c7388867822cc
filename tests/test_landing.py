"""The landing zone: replay files, the sensor, validation, quarantine and loading in real runs.

Days of December are used (the session's other tests load January) and removed at the end.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from dagster import DagsterEventType, DagsterInstance, build_sensor_context

from skewless import clock
from skewless.ingest import nycflights
from skewless.landing import landing_dir, pending_files
from skewless.landing.replay import drop_day, parse_pace, replay
from skewless.landing.validate import InvalidFile, validate_file

D1, D2, D3 = date(2013, 12, 1), date(2013, 12, 2), date(2013, 12, 3)


def _rewrite(path, edit) -> None:
    path.write_text(edit(path.read_text()))


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
        f"{d}.csv" for d in (D1, D2, D3)
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
    requests, _ = _evaluate(instance)
    (flights_run,) = [r for r in requests if r.asset_selection[0].path[1] == "flights"]
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
