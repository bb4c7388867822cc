"""On-demand features on real flights: the value served at T (Python and HTTP) equals the training
value at T, and the registry, discovery and OpenAPI document show them with their code."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pandas as pd

from skewless.offline.historical import get_historical_features
from skewless.online.reader import get_online_features
from skewless.online.writer import materialize_view
from skewless.registry import load_registry
from skewless.serving.app import ServingApp
from skewless.serving.discovery import describe_registry
from skewless.serving.store import redis_client
from tests.test_http_serving import _get, _running
from tests.test_online_skew import _same

FEATURES = [
    "flight_timing_v1:minutes_to_departure",
    "flight_timing_v1:weekend_or_holiday",
    "delay_gap_v1:route_minus_carrier_delay_7d",
    "route_delay_stats_v1:dep_delay_mean_7d",
]


def test_served_on_demand_values_equal_training_values(materialized, pg, rds, namespace, svc):
    registry = load_registry()
    flights = pd.DataFrame(
        pg.execute(
            "select carrier, origin, dest, sched_dep_ts from staging.stg_flights"
            " where flight_date between '2013-01-05' and '2013-01-12'"
            " order by md5(carrier || flight_number::text || sched_dep_ts::text) limit 90"
        ).fetchall(),
        columns=["carrier", "origin", "dest", "sched_dep_ts"],
    )
    flights["sched_dep_ts"] = pd.to_datetime(flights["sched_dep_ts"], utc=True)
    names = [ref.split(":")[1] for ref in FEATURES]
    compared = present = 0
    for chunk in range(3):
        batch = flights.iloc[chunk * 30 : (chunk + 1) * 30].reset_index(drop=True)
        at = batch["sched_dep_ts"].iloc[0].to_pydatetime() - timedelta(hours=2)
        ns = f"{namespace}-od-{uuid.uuid4().hex[:6]}"
        for view in ("route_delay_stats_v1", "carrier_delay_stats_v2"):
            materialize_view(pg, rds, ns, registry.view(view), as_of=at, now=at)
        entities = batch[["carrier", "origin", "dest"]].to_dict("records")
        request = [{"scheduled_departure": t.to_pydatetime()} for t in batch["sched_dep_ts"]]
        online = get_online_features(
            rds, registry, ns, entities, FEATURES, now=at, request_data=request
        )
        spine = batch.rename(columns={"sched_dep_ts": "scheduled_departure"}).assign(
            event_timestamp=at
        )
        offline = get_historical_features(pg, registry, spine, FEATURES)
        assert str(offline["weekend_or_holiday"].dtype) == "boolean"
        for ref, name in zip(FEATURES, names, strict=True):
            for i in range(len(batch)):
                value = online.columns[ref][i]
                assert _same(value, offline[name].iloc[i]), (at, ref, entities[i], value)
                compared += 1
                present += online.statuses[ref][i] == "present"
        minutes = online.columns[FEATURES[0]]
        assert minutes == [(t - at).total_seconds() / 60 for t in batch["sched_dep_ts"]]
        if chunk == 0:  # the same over HTTP, and a missing request field named
            client = redis_client(svc.redis_url)
            with _running(ServingApp(registry, client, ns, coalesce=True)) as port:
                body = {
                    "entities": entities[:5],
                    "features": FEATURES,
                    "now": at.isoformat(),
                    "request_data": [
                        {"scheduled_departure": r["scheduled_departure"].isoformat()}
                        for r in request[:5]
                    ],
                }
                answer = _get(port, body)
                assert answer.status == 200, answer.body
                for ref in FEATURES:
                    assert answer.json["columns"][ref] == online.columns[ref][:5]
                    assert answer.json["statuses"][ref] == online.statuses[ref][:5]
                body["request_data"] = [{} for _ in range(5)]
                answer = _get(port, body)
                assert answer.status == 422
                assert "lacks field 'scheduled_departure' (timestamptz)" in answer.error["message"]
                body["request_data"] = {"scheduled_departure": "tomorrow"}
                answer = _get(port, body)
                assert answer.status == 422
                assert "scheduled_departure" in answer.error["message"]
            client.close()
    assert compared == 90 * len(FEATURES)
    assert present > compared * 0.7


def test_registry_and_discovery_list_on_demand_views_with_their_code(materialized, pg):
    registry = load_registry()
    view = registry.view("flight_timing_v1")
    assert view.kind == "on_demand" and view.on_demand is not None
    assert [f.name for f in registry.service("delay_model_v4").features][-3:] == [
        "minutes_to_departure",
        "weekend_or_holiday",
        "route_minus_carrier_delay_7d",
    ]
    (entry,) = [v for v in describe_registry(registry)["views"] if v["name"] == "flight_timing"]
    assert entry["on_demand"]["request"] == {"scheduled_departure": "timestamptz"}
    assert "def flight_timing(request_time, scheduled_departure):" in entry["on_demand"]["source"]
    from skewless.serving.openapi import spec

    schema = spec(1 << 20, 1000, registry)["components"]["schemas"]["RequestData_flight_timing_v1"]
    assert schema["required"] == ["scheduled_departure"]
    assert "def flight_timing(" in schema["x-skewless-source"]
    row = pg.execute(
        "select kind, on_demand->>'code_hash' from features.registry"
        " where view = 'flight_timing' and version = 1"
    ).fetchone()
    assert row == ("on_demand", view.on_demand.code_hash)
