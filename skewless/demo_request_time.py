"""The demo's request-time part: a training set and online reads of `delay_model_v4` (batch, live
and on-demand features), every served vector logged, then the serving-skew monitor recomputing
them with the training API: the expected number of differences is zero."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import psycopg

from skewless.registry import Registry

SERVICE = "delay_model_v4"
SERVED_FLIGHTS = 40


def request_time_lines(
    conn: psycopg.Connection,
    registry: Registry,
    spine: pd.DataFrame | None,
    day: date,
    now: datetime,
    hm,
) -> list[str]:
    """Lines to print: the on-demand columns of a training set of `spine` (flights two hours
    before departure), then `SERVED_FLIGHTS` vectors served at `now` and logged, then the
    monitor's verdict on them."""
    from skewless import FeatureStore
    from skewless.monitoring.serving_skew import run_serving_skew
    from skewless.offline.historical import get_historical_features

    if SERVICE not in registry.services:
        return [f"\nrequest-time features skipped: the published registry has no {SERVICE}"]
    service = registry.services[SERVICE]
    on_demand = [f for f in service.features if f.view.is_on_demand]
    lines = []
    if spine is not None:
        keys = spine[["carrier", "origin", "dest", "tailnum", "event_timestamp"]].assign(
            scheduled_departure=spine["sched_dep_ts"]
        )
        got = get_historical_features(conn, registry, keys, feature_service=SERVICE)
        table = pd.DataFrame(
            {
                "flight": spine["carrier"] + spine["flight_number"].astype(str),
                "route": spine["origin"] + "-" + spine["dest"],
                "departs": [hm(t) for t in spine["sched_dep_ts"]],
                "as_of": [hm(t) for t in spine["event_timestamp"]],
                **{f.name: got[f.name] for f in on_demand},
            }
        )
        lines.append(
            f"\nTraining set of {SERVICE} (the same call; {len(on_demand)} request-time features "
            "computed by on_demand/flights.py from the spine's scheduled_departure and its time, "
            "and from two stored views), its on-demand columns:"
        )
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            lines.append(table.to_string(index=False))
    flights = conn.execute(
        "select carrier, origin, dest, tailnum, sched_dep_ts from staging.stg_flights"
        " where flight_date = %s and tailnum is not null and sched_dep_ts > %s"
        " order by sched_dep_ts limit %s",
        (day, now, SERVED_FLIGHTS),
    ).fetchall() or conn.execute(
        "select carrier, origin, dest, tailnum, sched_dep_ts from staging.stg_flights"
        " where flight_date = %s and tailnum is not null order by sched_dep_ts desc limit %s",
        (day, SERVED_FLIGHTS),
    ).fetchall()
    store = FeatureStore(log_features=True)
    for carrier, origin, dest, tailnum, departs in flights:  # one request per flight, as a model server
        vector = store.get_online_features(
            [{"carrier": carrier, "origin": origin, "dest": dest, "tailnum": tailnum}],
            feature_service=SERVICE,
            now=now,
            request_data={"scheduled_departure": departs},
        )
    store.feature_log.flush(30)
    store.feature_log.close()
    carrier, origin, dest, tailnum, departs = flights[-1]
    lines.append(
        f"\nServed {len(flights)} {SERVICE} vectors at the clock {hm(now)} (one call per flight, "
        "request_data = its scheduled departure), each logged to monitoring.feature_log. The last "
        "one, flight "
        f"{carrier} {origin}-{dest} departing {hm(departs)}:"
    )
    for f in on_demand:
        lines.append(
            f"  {f.reference:<46} {vector.columns[f.name][0]!s:>22}  ({vector.statuses[f.name][0]})"
        )
    # strict by default, except under a replay clock (the demo's): see `replaying`
    report = run_serving_skew(served_from=now)
    lines.append(
        "\nServing-skew monitor (monitoring/serving_skew: every logged vector recomputed with "
        "get_historical_features at its served time, value by value):"
    )
    lines.append("  " + report.summary().replace("\n", "\n  "))
    return lines
