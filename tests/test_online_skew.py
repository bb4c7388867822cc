"""No training/serving skew: what a model reads online at T is its training row at T.

For sampled real flights, the online store is materialized with the data known up to T (as a live
system would have it at T), then the feature vector read from Redis at T must equal the row
`get_historical_features` builds for the same entity and T, feature by feature, type by type.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pandas as pd

from skewless.offline.historical import get_historical_features
from skewless.online.reader import MISSING, PRESENT, get_online_features
from skewless.online.writer import materialize_view
from skewless.registry import load_registry

SERVICE = "delay_model_v1"


def _same(online: object, offline: object) -> bool:
    if pd.isna(offline):
        return online is None
    if isinstance(offline, float):
        return isinstance(online, float) and online == offline  # exact: no rounding on the way
    return online == (offline.item() if hasattr(offline, "item") else offline)


def test_online_vector_at_t_equals_the_training_row_at_t(materialized, pg, rds, namespace):
    registry = load_registry()
    service = registry.service(SERVICE)
    flights = pd.DataFrame(
        pg.execute(
            "select carrier, origin, dest, tailnum, sched_dep_ts from staging.stg_flights"
            " where flight_date between '2013-01-04' and '2013-01-12' and tailnum is not null"
            " order by md5(carrier || flight_number::text || sched_dep_ts::text) limit 240"
        ).fetchall(),
        columns=["carrier", "origin", "dest", "tailnum", "sched_dep_ts"],
    )
    compared = present = 0
    for chunk in range(6):  # six instants T, 40 flights read at each
        batch = flights.iloc[chunk * 40 : (chunk + 1) * 40]
        at = pd.Timestamp(batch["sched_dep_ts"].iloc[0]).to_pydatetime() - timedelta(hours=2)
        ns = f"{namespace}-skew-{uuid.uuid4().hex[:6]}"
        for view in service.views:
            materialize_view(pg, rds, ns, view, as_of=at, now=at)
        entities = batch[["carrier", "origin", "dest", "tailnum"]].to_dict("records")
        online = get_online_features(rds, registry, ns, entities, feature_service=SERVICE, now=at)
        spine = batch[["carrier", "origin", "dest", "tailnum"]].assign(event_timestamp=at)
        offline = get_historical_features(pg, registry, spine, feature_service=SERVICE)
        for feature in service.features:
            for i in range(len(batch)):
                value, status = online.columns[feature.name][i], online.statuses[feature.name][i]
                expected = offline[feature.name].iloc[i]
                assert status in (PRESENT, MISSING), (feature.name, i, status)
                assert _same(value, expected), (at, feature.name, entities[i], value, expected)
                compared += 1
                present += status == PRESENT
    assert compared == 240 * len(service.features)
    assert present > compared * 0.8, "the sample should mostly hit real values"


def test_online_reads_skip_values_written_after_t(materialized, pg, rds, namespace):
    """Materializing as of T ignores rows with feature_ts after T, as the training row does."""
    registry = load_registry()
    view = registry.view("carrier_delay_stats_v1")
    at = pd.Timestamp("2013-01-08T12:00:00-05:00").to_pydatetime()
    ns = f"{namespace}-asof-{uuid.uuid4().hex[:6]}"
    materialize_view(pg, rds, ns, view, as_of=at, now=at)
    online = get_online_features(
        rds, registry, ns, [{"carrier": "UA"}], ["carrier_delay_stats_v1:late_share_7d"], now=at
    )
    expected = pg.execute(
        "select late_share_7d from features.carrier_delay_stats_v1 where carrier = 'UA'"
        " and feature_ts <= %s order by feature_ts desc, created_at desc limit 1",
        (at,),
    ).fetchone()[0]
    assert online.columns["carrier_delay_stats_v1:late_share_7d"] == [expected]
