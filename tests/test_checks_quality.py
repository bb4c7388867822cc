"""Schema and data-quality checks: injected failures are named, and block publishing to Redis.

Each Dagster test runs the view's blocking checks and its online asset in one run of the real
`build_features` job on the real instance (the table as injected, not rebuilt), then restores
the table exactly. A positive control shows the same run publishes once the data is good.
"""

from __future__ import annotations

import pytest
from quality_helpers import (
    check_then_publish,
    definitions,
    evaluations,
    published,
    redis_snapshot,
    restored,
    scratch_copy,
)

from assets.dbt import feature_view_asset_key
from skewless.config import settings
from skewless.quality.expectations import suite_for, validate
from skewless.quality.schema import check_schema
from skewless.registry import load_registry

BLOCKING = ["schema_matches_registry", "quality_expectations"]


@pytest.fixture(scope="module")
def defs(materialized):
    return definitions()


@pytest.fixture(scope="module")
def registry(materialized):
    return load_registry()


def test_the_build_ran_both_blocking_checks_on_every_view_and_they_passed(materialized, registry):
    evaluations_ = [e for r in materialized for e in r.get_asset_check_evaluations()]
    ours = {(e.asset_key, e.check_name): e for e in evaluations_ if e.check_name in BLOCKING}
    for name in registry.table_views:
        for check in BLOCKING:
            evaluation = ours[(feature_view_asset_key(name), check)]
            assert evaluation.passed, (name, check, evaluation.description)
            assert evaluation.blocking


def test_generated_suite_covers_keys_uniqueness_ranges_and_null_rates(registry):
    view = registry.view("route_delay_stats_v1")
    labels = {s.label: s for s in suite_for(view)}
    for column in ("origin", "dest", "feature_ts", "created_at", "flight_count_30d"):
        assert f"expect_column_values_to_not_be_null({column})" in labels
    assert "unique(origin, dest, feature_ts, created_at)" in labels
    assert labels["expect_column_values_to_be_between(late_share_7d)"].kwargs == {
        "column": "late_share_7d",
        "min_value": 0,
        "max_value": 1,
    }
    null_rate = labels["expect_column_proportion_of_non_null_values_to_be_between(late_share_7d)"]
    assert null_rate.kwargs["min_value"] == pytest.approx(0.9)
    declared = [s for s in suite_for(view) if s.origin.startswith("declared")]
    assert {s.type for s in declared} == {
        "expect_column_values_to_be_in_set",
        "expect_column_pair_values_a_to_be_greater_than_b",
    }
    # v2 dropped flight_count_30d, and with it the expectation its column declared
    v2 = {s.label for s in suite_for(registry.view("carrier_delay_stats_v2"))}
    assert not any("flight_count_30d" in label for label in v2)


def test_out_of_range_values_are_counted_and_sampled_with_their_keys(svc, registry):
    view = registry.view("carrier_delay_stats_v1")
    with scratch_copy(svc.postgres_url, view.relation, "carrier_range") as (conn, relation):
        conn.execute(
            f"update {relation[0]}.{relation[1]} set late_share_7d = 1.5 where ctid in"
            f" (select ctid from {relation[0]}.{relation[1]} where carrier = 'UA' limit 3)"
        )
        report = validate(svc.postgres_url, view, relation=relation)
    assert not report.passed
    [failed] = report.failed
    assert failed.spec.label == "expect_column_values_to_be_between(late_share_7d)"
    assert failed.unexpected_count == 3
    assert {row["carrier"] for row in failed.sample} == {"UA"}
    assert {row["late_share_7d"] for row in failed.sample} == {1.5}
    assert "3 of" in report.describe() and "late_share_7d" in report.describe()


def test_too_many_nulls_and_a_hand_written_expectation_fail_by_name(svc, registry):
    view = registry.view("origin_weather_v1")
    with scratch_copy(svc.postgres_url, view.relation, "weather_nulls") as (conn, relation):
        rel = f"{relation[0]}.{relation[1]}"
        conn.execute(f"update {rel} set temp = null where extract(hour from feature_ts) < 6")
        conn.execute(f"update {rel} set origin = 'BOS' where ctid = (select min(ctid) from {rel})")
        report = validate(svc.postgres_url, view, relation=relation)
    failed = {o.spec.label: o for o in report.failed}
    assert set(failed) == {
        "expect_column_proportion_of_non_null_values_to_be_between(temp)",
        "expect_column_values_to_be_in_set(origin)",
    }
    assert (
        failed["expect_column_proportion_of_non_null_values_to_be_between(temp)"].observed_value
        < 0.95
    )
    assert failed["expect_column_values_to_be_in_set(origin)"].sample[0]["origin"] == "BOS"
    assert failed["expect_column_values_to_be_in_set(origin)"].spec.origin.startswith("declared")


def test_schema_check_names_missing_and_retyped_columns(svc, registry):
    view = registry.view("plane_profile_v1")
    with scratch_copy(svc.postgres_url, view.relation, "plane_schema") as (conn, relation):
        rel = f"{relation[0]}.{relation[1]}"
        assert check_schema(conn, view, relation).passed
        conn.execute(f"alter table {rel} drop column engines")
        conn.execute(f"alter table {rel} alter column seats type text")
        conn.execute(f"alter table {rel} add column note text")
        report = check_schema(conn, view, relation)
    assert not report.passed
    assert report.source == "registry"
    assert report.missing == ["engines"]
    assert report.retyped == [("seats", "text", "integer")]
    assert report.extra == ["note"]
    assert "missing column(s) engines" in report.describe()
    assert "seats is text, registry says integer" in report.describe()


def test_a_retyped_column_fails_the_schema_check_and_nothing_is_published(svc, defs, rds):
    name, namespace = "carrier_delay_stats_v1", settings().namespace
    before = redis_snapshot(rds, namespace, name)
    assert before, "the session's build published this view"
    with restored(svc.postgres_url, "features", name) as conn:
        conn.execute(f"alter table features.{name} alter column late_share_7d type text")
        # a newer row that publishing would carry to Redis
        conn.execute(
            f"insert into features.{name} select carrier, feature_ts + interval '1 day',"
            f" created_at, dep_delay_mean_7d, dep_delay_mean_30d, '0.99', late_share_30d,"
            f" flight_count_7d, flight_count_30d from features.{name} where carrier = 'UA'"
            f" order by feature_ts desc limit 1"
        )
        result = check_then_publish(defs, name, BLOCKING, feature_view_asset_key(name))
    checks = evaluations(result)
    assert not result.success
    assert not checks["schema_matches_registry"].passed
    assert "late_share_7d is text, registry says double precision" in (
        checks["schema_matches_registry"].description
    )
    assert not published(result, name)
    assert redis_snapshot(rds, namespace, name) == before


def test_a_null_key_fails_data_quality_and_nothing_is_published_until_fixed(svc, defs, rds):
    name, namespace = "airport_schedule_load_v1", settings().namespace
    before = redis_snapshot(rds, namespace, name)
    assert before
    ttls = {key: rds.pttl(key) for key in before}
    with restored(svc.postgres_url, "partner", "airport_schedule_load") as conn:
        # the partner's table is another team's: nothing there stops a NULL key
        conn.execute("alter table partner.airport_schedule_load alter column origin drop not null")
        conn.execute(
            "insert into partner.airport_schedule_load (origin, observed_at, loaded_at,"
            " departures_next_2h, destinations_next_2h) select o, max(observed_at) + interval '1 hour',"
            " now(), 99, 9 from partner.airport_schedule_load,"
            " (values ('JFK'), (null)) v(o) group by o"
        )
        result = check_then_publish(defs, name, BLOCKING, feature_view_asset_key(name))
        checks = evaluations(result)
        assert checks["schema_matches_registry"].passed
        quality = checks["quality_expectations"]
        assert not quality.passed
        assert quality.metadata["failed_expectations"].value == (
            "expect_column_values_to_not_be_null(origin)"
        )
        assert quality.metadata["unexpected_rows"].value == 1
        [failure] = quality.metadata["failures"].data
        assert failure["sample"][0]["origin"] is None
        assert "1 of" in quality.description
        assert not published(result, name)
        assert redis_snapshot(rds, namespace, name) == before
        # positive control: without the NULL key the same run passes and publishes the new row
        conn.execute("delete from partner.airport_schedule_load where origin is null")
        fixed = check_then_publish(defs, name, BLOCKING, feature_view_asset_key(name))
        assert fixed.success and published(fixed, name)
        assert redis_snapshot(rds, namespace, name) != before
    # put Redis back as the session had it, expiry included (the injected row is gone again)
    for key, value in before.items():
        rds.set(key, value, px=ttls[key] if ttls[key] > 0 else None)


def test_a_duplicate_row_fails_data_quality_and_nothing_is_published(svc, defs, rds):
    """A partner's table has no unique index (another team's): the suite's uniqueness
    expectation over its rows catches a duplicate, and the view is not published."""
    name, namespace = "airport_schedule_load_v1", settings().namespace
    before = redis_snapshot(rds, namespace, name)
    with restored(svc.postgres_url, "partner", "airport_schedule_load") as conn:
        conn.execute(
            "insert into partner.airport_schedule_load select * from partner.airport_schedule_load"
            " where origin = 'JFK' order by observed_at desc limit 1"
        )
        result = check_then_publish(defs, name, BLOCKING, feature_view_asset_key(name))
    quality = evaluations(result)["quality_expectations"]
    assert not quality.passed
    assert quality.metadata["failed_expectations"].value == (
        "unique(origin, observed_at, loaded_at)"
    )
    [failure] = quality.metadata["failures"].data
    assert failure["sample"][0]["origin"] == "JFK" and failure["sample"][0]["copies"] == 2
    assert not published(result, name)
    assert redis_snapshot(rds, namespace, name) == before


def test_a_feature_view_refuses_a_duplicate_row_by_its_unique_index(svc):
    """One row per key + feature_ts + created_at holds by construction in a dbt feature view:
    a duplicate written by hand, outside any build, is refused by PostgreSQL (so a check that
    reads only the rows a build wrote misses none)."""
    import psycopg

    name = "route_delay_stats_v1"
    with psycopg.connect(svc.postgres_url, autocommit=True) as conn:
        rows = conn.execute(f"select count(*) from features.{name}").fetchone()[0]
        with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate key value"):
            conn.execute(
                f"insert into features.{name} select * from features.{name}"
                " where origin = 'JFK' and dest = 'LAX' order by feature_ts desc limit 1"
            )
        assert conn.execute(f"select count(*) from features.{name}").fetchone()[0] == rows


def test_expectations_the_table_guarantees_are_reported_and_not_run(svc, registry):
    """A feature view's NOT NULL keys and times and its unique [keys, feature_ts, created_at]
    index make those expectations true of every row: the report names the constraint instead
    of scanning for what PostgreSQL refused at the insert. A copy without the constraints gets
    them run, and they catch what the table could not hold."""
    view = registry.view("route_delay_stats_v1")
    report = validate(svc.postgres_url, view)
    held = {o.spec.label: o.guaranteed_by for o in report.outcomes if o.guaranteed_by}
    columns = ["origin", "dest", "feature_ts", "created_at"]
    unique = f"unique({', '.join(columns)})"
    assert set(held) == {f"expect_column_values_to_not_be_null({c})" for c in columns} | {unique}
    assert held[unique].startswith("the unique index ")
    assert held[unique].endswith(f"on ({', '.join(columns)})")
    assert held["expect_column_values_to_not_be_null(dest)"] == "the NOT NULL constraint on dest"
    assert report.passed and "(5 guaranteed by the table's constraints)" in report.describe()
    # the features are still judged: ranges and NULL rates are no constraint
    assert len(report.outcomes) - len(held) == len(suite_for(view)) - 5 > 0
    with scratch_copy(svc.postgres_url, view.relation, "route_unconstrained") as (conn, relation):
        rel = f"{relation[0]}.{relation[1]}"
        conn.execute(f"update {rel} set dest = null where ctid = (select min(ctid) from {rel})")
        conn.execute(f"insert into {rel} select * from {rel} where dest is not null limit 1")
        copy = validate(svc.postgres_url, view, relation=relation)
    assert not any(o.guaranteed_by for o in copy.outcomes)
    assert {o.spec.label for o in copy.failed} == {
        "expect_column_values_to_not_be_null(dest)",
        unique,
    }


def test_the_check_validates_the_rows_the_latest_build_wrote(svc, registry):
    """A daily build validates its rewritten rows, not the year before them again: a bad row the
    build did not write is not looked at, one it wrote is, and with no record every row is."""
    view = registry.view("carrier_delay_stats_v1")
    with scratch_copy(svc.postgres_url, view.relation, "carrier_written") as (conn, relation):
        rel, model = f"{relation[0]}.{relation[1]}", f"{relation[0]}.{relation[1]}"
        last = conn.execute(f"select max(feature_ts) from {rel}").fetchone()[0]
        conn.execute(
            f"update {rel} set late_share_7d = 1.5 where ctid in (select ctid from {rel}"
            f" where feature_ts < %s - interval '10 days' limit 2)",
            (last,),
        )
        whole = validate(svc.postgres_url, view, relation=relation, written_only=True)
        assert [o.unexpected_count for o in whole.failed] == [2]  # no record: every row
        conn.execute(
            "insert into raw.build_state (model, seen, rows_written) values"
            " (%s, pg_current_snapshot(), tstzmultirange(tstzrange(%s - interval '2 days', null)))",
            (model, last),
        )
        try:
            written = validate(svc.postgres_url, view, relation=relation, written_only=True)
            assert written.passed and "rows its latest build wrote" in written.describe()
            conn.execute(
                f"update {rel} set late_share_7d = 1.5 where ctid ="
                f" (select ctid from {rel} where feature_ts = %s limit 1)",
                (last,),
            )
            again = validate(svc.postgres_url, view, relation=relation, written_only=True)
            assert [o.unexpected_count for o in again.failed] == [1]
            # a build that wrote nothing: no rates over no rows, nothing new to fail
            conn.execute(
                "update raw.build_state set rows_written = '{}' where model = %s", (model,)
            )
            empty = validate(svc.postgres_url, view, relation=relation, written_only=True)
            assert empty.passed and not empty.outcomes
            assert "wrote no rows: nothing new to validate" in empty.describe()
        finally:
            conn.execute("delete from raw.build_state where model = %s", (model,))
