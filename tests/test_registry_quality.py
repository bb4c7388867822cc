"""Quality declarations in YAML: ranges, NULL-rate limits and hand-written expectations parse,
and malformed ones fail when definitions load, naming the view, file and column."""

from __future__ import annotations

import pytest
from test_registry_definitions import _manifest, _model

from skewless.errors import DefinitionError
from skewless.quality.expectations import known_expectation
from skewless.registry.manifest import views_from_manifest


def _with_column_meta(model: dict, column: str, **skewless) -> dict:
    model["columns"][column]["config"] = {"meta": {"skewless": skewless}}
    return model


def test_ranges_null_rates_and_expectations_parse():
    model = _with_column_meta(
        _model(
            expectations=[
                {
                    "type": "expect_column_values_to_match_regex",
                    "kwargs": {"column": "carrier", "regex": "^[A-Z]{2}$"},
                }
            ]
        ),
        "late_share_7d",
        range=[0, None],
        max_null_rate=0.1,
        expectations=[{"type": "expect_column_values_to_be_between", "kwargs": {"max_value": 1}}],
    )
    [view] = views_from_manifest(_manifest(model))
    [feature] = view.features
    assert feature.range == (0, None) and feature.max_null_rate == 0.1
    declared = {e.type: e for e in view.expectations}
    assert declared["expect_column_values_to_be_between"].kwargs == {
        "column": "late_share_7d",
        "max_value": 1,
    }
    assert declared["expect_column_values_to_match_regex"].declared_on == ""
    assert hash(view)  # still usable as a dict key (feature services group by view)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"range": [1]}, "range [1] is not [min, max]"),
        ({"range": [2, 1]}, "has min > max"),
        ({"max_null_rate": 1.5}, "max_null_rate 1.5 is not a share"),
        ({"expectations": ["not_null"]}, "is not {type: expect_..."),
    ],
)
def test_malformed_declarations_name_view_file_and_column(meta, message):
    model = _with_column_meta(_model(), "late_share_7d", **meta)
    with pytest.raises(DefinitionError, match="carrier_stats") as err:
        views_from_manifest(_manifest(model))
    assert message in str(err.value) and "models/features/carrier_stats.yml" in str(err.value)


def test_known_expectations_are_found_without_importing_great_expectations():
    assert known_expectation("expect_column_values_to_be_between")
    assert not known_expectation("expect_column_values_to_be_lovely")
