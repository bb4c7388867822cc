"""No values from the future: the blocking `no_future_values` check keeps rows whose feature_ts is
after the project clock out of Redis (issue 12, point 4b).

The Dagster test runs the check and the view's online asset in one run of the real
`build_features` job on the real instance, with a row from 2030 injected into the built table
(restored exactly afterwards), as a landing file dated 2030 once put there.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from quality_helpers import (
    check_then_publish,
    definitions,
    evaluations,
    published,
    redis_snapshot,
    restored,
)

from assets.dbt import feature_view_asset_key
from checks.future_values import future_rows
from skewless import clock
from skewless.config import settings
from skewless.registry import load_registry

CHECK = "no_future_values"


@pytest.fixture(scope="module")
def defs(materialized):
    return definitions()


@pytest.fixture(scope="module")
def registry(materialized):
    return load_registry()


def test_the_build_ran_the_blocking_check_on_every_view_and_it_passed(materialized, registry):
    found = {
        e.asset_key: e
        for r in materialized
        for e in r.get_asset_check_evaluations()
        if e.check_name == CHECK
    }
    for name in registry.table_views:
        evaluation = found[feature_view_asset_key(name)]
        assert evaluation.passed, (name, evaluation.description)
        assert evaluation.blocking
        assert evaluation.metadata["future_rows"].value == 0


def test_the_rule_is_feature_ts_after_the_clock_inclusive_edge_passes(pg, registry):
    view = registry.view("plane_profile_v1")
    newest = pg.execute(f"select max(feature_ts) from {view.relation}").fetchone()[0]
    assert future_rows(pg, view, newest).passed  # a value of exactly now is not from the future
    report = future_rows(pg, view, newest - timedelta(microseconds=1))
    assert not report.passed and report.rows >= 1 and report.newest == newest
    assert report.sample and set(report.sample[0]) == {"tailnum", "feature_ts"}


def test_a_row_from_2030_fails_the_check_and_nothing_is_published_until_it_is_gone(svc, defs, rds):
    name, namespace = "plane_profile_v1", settings().namespace
    before = redis_snapshot(rds, namespace, name)
    assert before, "the session's build published this view"
    with restored(svc.postgres_url, "features", name) as conn:
        conn.execute(
            f"create temp table future as select * from features.{name}"
            " order by feature_ts desc limit 1"
        )
        conn.execute("update future set feature_ts = '2030-01-02 05:00+00'")
        conn.execute(f"insert into features.{name} select * from future")
        result = check_then_publish(defs, name, [CHECK], feature_view_asset_key(name))
        check = evaluations(result)[CHECK]
        assert not result.success
        assert not check.passed
        assert f"1 rows of features.{name} have feature_ts after the project clock" in (
            check.description
        )
        assert check.metadata["clock"].value == clock.now().isoformat()
        assert check.metadata["newest_feature_ts"].value == "2030-01-02T05:00:00+00:00"
        assert not published(result, name)
        assert redis_snapshot(rds, namespace, name) == before
        # positive control: without the row from the future the same run passes and publishes
        conn.execute(f"delete from features.{name} where feature_ts > '2029-01-01'")
        fixed = check_then_publish(defs, name, [CHECK], feature_view_asset_key(name))
        assert fixed.success and published(fixed, name)
        assert evaluations(fixed)[CHECK].passed
