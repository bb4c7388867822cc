"""Online/offline consistency on the session's real data, and pushes through the FeatureStore."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pandas as pd
import pytest

from checks.online_consistency import online_consistency_check
from resources import PostgresResource, RedisResource
from skewless import FeatureStore, clock
from skewless.config import settings
from skewless.errors import DataError
from skewless.online import codec
from skewless.online.consistency import compare_sample
from skewless.online.keys import entity_key
from skewless.online.writer import materialize_view
from skewless.registry import load_registry


def test_published_views_match_their_offline_tables(materialized, pg, rds):
    registry = load_registry()
    for view in registry.table_views.values():
        report = compare_sample(pg, rds, settings().namespace, view, sample=300)
        assert report.sampled > 0, view.versioned_name
        assert (report.mismatched, report.examples) == (0, []), view.versioned_name


def test_a_corrupted_redis_value_fails_the_consistency_check(materialized, pg, rds, svc):
    view = load_registry().view("carrier_delay_stats_v1")
    ns = f"{settings().namespace}-corrupt-{uuid.uuid4().hex[:6]}"
    materialize_view(pg, rds, ns, view)
    key = entity_key(ns, view.versioned_name, ["UA"])
    raw = rds.get(key)
    values = codec.decode_values(raw)
    values[0] = (values[0] or 0) + 1.0  # same version header, another value: silent corruption
    rds.set(key, raw[: codec.HEADER] + codec.encode(clock.now(), clock.now(), values)[32:])
    check = online_consistency_check(view)
    result = check(
        postgres=PostgresResource(url=svc.postgres_url),
        redis=RedisResource(url=svc.redis_url, namespace=ns),
    )
    assert not result.passed
    assert result.metadata["mismatched"].value == 1
    examples = result.metadata["examples"].value
    assert len(examples) == 1 and "'carrier': 'UA'" in examples[0]
    assert f"{view.feature_names[0]} is" in examples[0]
    # a damaged body that no longer decodes, and a deleted key, are named too
    rds.set(key, raw[: codec.HEADER] + b"\xc1garbage")
    rds.delete(entity_key(ns, view.versioned_name, ["AA"]))
    report = compare_sample(pg, rds, ns, view, sample=1000)
    assert report.mismatched == 2
    assert any("does not decode" in e for e in report.examples)
    assert any("missing in Redis" in e for e in report.examples)


def test_pushes_reach_readers_and_bad_rows_write_nothing(materialized, svc, namespace):
    store = FeatureStore(svc.postgres_url, svc.redis_url, namespace)
    view = store.registry.view("carrier_delay_stats")
    now = clock.now()
    row = {
        "carrier": "ZZ",
        view.ts_column: now - timedelta(hours=1),
        view.created_column: now,
        # each feature as its type takes it: pushes are validated like the batch path's rows
        **{f.name: 3 if f.dtype == "bigint" else 0.5 for f in view.features},
    }
    bad = {**row, "carrier": "YY", view.created_column: "yesterday"}
    with pytest.raises(DataError, match="row 1 column created_at must be a datetime"):
        store.push("carrier_delay_stats", [row, bad])
    assert store.get_online_features(
        [{"carrier": "ZZ"}], [f"carrier_delay_stats:{view.feature_names[0]}"]
    ).statuses[f"{view.versioned_name}:{view.feature_names[0]}"] == ["missing"]
    result = store.push("carrier_delay_stats", pd.DataFrame([row]))
    assert (result.entities, result.written) == (1, 1)
    read = store.get_online_features(
        [{"carrier": "ZZ"}], [f"carrier_delay_stats:{f}" for f in view.feature_names]
    )
    assert all(read.columns[f"{view.versioned_name}:{f}"] == [row[f]] for f in view.feature_names)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['carrier'\]"):
        store.push("carrier_delay_stats", [{k: v for k, v in row.items() if k != "carrier"}])
