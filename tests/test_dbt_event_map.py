"""dagster-dbt's event map as Skewless runs it: results in order and as soon as they are ready,
errors where they happened, and no core spent waiting (skewless/dbt_event_map.py); its adapter
made on a thread (resources/dbt.py)."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from resources.dbt import AdapterAhead
from skewless.dbt_event_map import install, ordered_map


def _slow_square(x: int) -> int:
    time.sleep(random.random() / 200)
    return x * x


@pytest.mark.parametrize("workers", [1, 4])
def test_results_come_in_input_order(workers):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        assert list(ordered_map(pool, iter(range(200)), _slow_square)) == [
            x * x for x in range(200)
        ]


def test_a_result_is_yielded_before_the_input_ends():
    first_seen = threading.Event()

    def events():
        yield 1
        assert first_seen.wait(10), "the first result was held until more input came"
        yield 2

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = ordered_map(pool, events(), lambda x: x)
        assert next(results) == 1
        first_seen.set()
        assert list(results) == [2]


def test_an_input_error_is_raised_after_the_results_before_it():
    def events():
        yield 1
        yield 2
        raise ValueError("dbt's log ended mid-line")

    got = []
    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(ValueError, match="mid-line"):
        for value in ordered_map(pool, events(), lambda x: x):
            got.append(value)
    assert got == [1, 2]


def test_a_function_error_is_raised_at_its_result():
    def boom(x: int) -> int:
        if x == 3:
            raise KeyError(x)
        return x

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = ordered_map(pool, iter(range(5)), boom)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(KeyError):
            next(results)


def test_waiting_for_the_next_event_costs_no_cpu():
    """Dagster's own map polled without sleeping: a core busy for the whole dbt command."""

    def events():
        yield 1
        time.sleep(0.5)  # dbt building a model
        yield 2

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = ordered_map(pool, events(), lambda x: x)
        next(results)
        cpu = time.thread_time()
        assert next(results) == 2
        assert time.thread_time() - cpu < 0.1  # a spinning wait takes about 0.5 s of CPU


def test_install_puts_it_in_dagster_dbt():
    from dagster_dbt.core import dbt_event_iterator

    install()
    install()  # idempotent
    assert dbt_event_iterator.imap is ordered_map


class _Adapter:
    type = "postgres"


def test_the_adapter_made_ahead_answers_as_the_adapter_once_made():
    made = threading.Event()

    def make():
        made.wait(10)
        return _Adapter()

    adapter = AdapterAhead(make)
    threading.Timer(0.05, made.set).start()
    assert adapter.type == "postgres"


def test_an_adapter_that_could_not_be_made_fails_inside_dagster_dbts_try():
    def make():
        raise OSError("no server")

    adapter = AdapterAhead(make)
    with adapter.connection_named("column_metadata_model.x"):  # outside dagster-dbt's try
        pass
    with pytest.raises(RuntimeError, match="no dbt adapter"):
        adapter.Relation  # noqa: B018 (the first use inside it)
