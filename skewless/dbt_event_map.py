"""dagster-dbt's column metadata without a core spinning while dbt runs.

`fetch_column_metadata()` maps dbt's events through a thread pool with Dagster's `imap`, whose
consumer loop polls: while dbt has no new event (all the time a model or a test runs), it spins on
`Future.done()` without sleeping. On a 2-core machine that took a whole core away from dbt and
PostgreSQL for the length of every dbt step (profiled: about 2 million `done()` calls in a
one-view build). `ordered_map` is the same map, ordered and streaming, with a consumer that
blocks until the next result is there. `install()` puts it in dagster-dbt's event iterator, and
fails loudly when an upgrade moved the function it replaces.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


def ordered_map(
    executor: ThreadPoolExecutor, iterable: Iterator[T], func: Callable[[T], R]
) -> Iterator[R]:
    """`func` over `iterable` on `executor`, results in input order as soon as each is ready.

    The input is read on a thread of its own (not one of the executor's, which a pool of one
    would then never free); an error reading it is raised after the results before it."""
    futures: queue.SimpleQueue = queue.SimpleQueue()
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            for item in iterable:
                futures.put(executor.submit(func, item))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the consumer)
            failed.append(exc)
        finally:
            futures.put(_END)

    reader = threading.Thread(target=feed, name="dbt-events", daemon=True)
    reader.start()
    while True:
        future = futures.get()
        if future is _END:
            break
        yield future.result()
    reader.join()
    if failed:
        raise failed[0]


def install() -> None:
    """Use `ordered_map` in dagster-dbt's event iterator (idempotent)."""
    from dagster_dbt.core import dbt_event_iterator

    current = getattr(dbt_event_iterator, "imap", None)
    if current is ordered_map:
        return
    if current is None or getattr(current, "__name__", "") != "imap":
        raise RuntimeError(
            "dagster_dbt.core.dbt_event_iterator.imap is gone: a dagster-dbt upgrade changed how "
            "column metadata is fetched; review skewless/dbt_event_map.py"
        )
    dbt_event_iterator.imap = ordered_map
