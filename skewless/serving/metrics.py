"""Prometheus metrics of the HTTP server, kept in a flat float64 array and exposed by hand.

Why by hand: an update must cost a few list-like index operations (the whole request budget is
well under a millisecond), and the series are a fixed, small set known in advance (endpoints,
statuses, histogram buckets, outcomes of accepted events), so each one is a fixed slot in one
array.

The stream workers' counters are not the server's: they live in Redis, one hash per stream
(`skewless.streams.worker.metrics_key`), and `/metrics` reads them at each scrape, in one round
trip, as per-stream series (`stream_exposition`).

Several worker processes (`skewless serve --workers N`) each own one file of that array in a
shared folder (an `mmap`, so an update is still a memory write, never a system call); `/metrics`,
whichever worker answers it, sums every file of the folder. A worker that died keeps its file, so
totals stay monotonic as Prometheus counters must. Without a folder the array lives in memory
(one process: tests, embedding the app).
"""

from __future__ import annotations

import mmap
import os
from array import array
from bisect import bisect_left
from pathlib import Path

ENDPOINTS = (
    "/get-online-features",
    "/features",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/events",
    "other",
)
"""Every path outside this list counts as `other`, so a scan of random URLs cannot grow series;
`/events` is every `POST /events/<stream>`."""
STATUSES = (200, 400, 401, 404, 405, 409, 413, 422, 500, 503)
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
"""Upper bounds in seconds: fine below a millisecond, where a feature read should land."""
REDIS_ERRORS = ("connection", "timeout", "other")
VALUE_STATUSES = ("present", "missing", "stale", "other")
"""Statuses of served values, as OnlineResult reports them (`other`: any status added later)."""
EVENT_OUTCOMES = ("received", "stored", "duplicate", "late")
"""Events of accepted `POST /events/<stream>` requests: received, stored (new event ids),
duplicate (already stored), late (older than the stream's allowed lateness, stored all the same)."""
FEATURE_LOG = (
    "logged",
    "dropped_queue_full",
    "dropped_write_failed",
    "sampled_out",
    "queue_rows",
    "write_errors",
)
"""The feature log's counters (skewless.feature_log.FeatureLogStats), as its writer last
published them: absolute values per worker, summed over workers like every slot."""

_E, _S, _B = len(ENDPOINTS), len(STATUSES), len(BUCKETS) + 1  # + the +Inf bucket
_REQUESTS = 0
_BUCKETS = _REQUESTS + _E * _S
_SUMS = _BUCKETS + _E * _B
_REDIS = _SUMS + _E
_VALUES = _REDIS + len(REDIS_ERRORS)
_EVENTS = _VALUES + len(VALUE_STATUSES)
_LOG = _EVENTS + len(EVENT_OUTCOMES)
SLOTS = _LOG + len(FEATURE_LOG)

ENDPOINT_INDEX = {name: i for i, name in enumerate(ENDPOINTS)}
_STATUS_INDEX = {status: i for i, status in enumerate(STATUSES)}
_VALUE_INDEX = {status: i for i, status in enumerate(VALUE_STATUSES)}
METRICS_DIR_ENV = "SKEWLESS_SERVING_METRICS_DIR"


class Metrics:
    """Counters and a latency histogram; `folder` shares them between worker processes."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        if folder is None:
            self._slots = array("d", bytes(8 * SLOTS))
            self._map = None
        else:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"worker-{os.getpid()}.bin"
            with open(path, "wb+") as handle:
                handle.truncate(8 * SLOTS)
                self._map = mmap.mmap(handle.fileno(), 8 * SLOTS)
            self._slots = memoryview(self._map).cast("d")

    def observe(self, endpoint: int, status: int, seconds: float) -> None:
        """One served request: `endpoint` is an index into ENDPOINTS."""
        slots = self._slots
        slots[_REQUESTS + endpoint * _S + _STATUS_INDEX.get(status, _STATUS_INDEX[500])] += 1.0
        slots[_BUCKETS + endpoint * _B + bisect_left(BUCKETS, seconds)] += 1.0
        slots[_SUMS + endpoint] += seconds

    def redis_error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        kind = 0 if "Connection" in name else 1 if "Timeout" in name else 2
        self._slots[_REDIS + kind] += 1.0

    def values(self, counts: dict[str, int]) -> None:
        """Served values by status (present, missing, stale): staleness seen by callers."""
        slots = self._slots
        for status, n in counts.items():
            slots[_VALUES + _VALUE_INDEX.get(status, len(VALUE_STATUSES) - 1)] += n

    def events(self, received: int, stored: int, duplicates: int, late: int) -> None:
        """One accepted `POST /events/<stream>` request."""
        slots = self._slots
        for i, n in enumerate((received, stored, duplicates, late)):
            slots[_EVENTS + i] += n

    def feature_log(self, stats: tuple[int, ...]) -> None:
        """The feature log's counters of this worker (FeatureLogStats), set, not added."""
        slots = self._slots
        for i, n in enumerate(stats):
            slots[_LOG + i] = float(n)

    def _totals(self) -> list[float]:
        if self.folder is None:
            return list(self._slots)
        totals = [0.0] * SLOTS
        for path in self.folder.glob("worker-*.bin"):
            data = path.read_bytes()
            if len(data) != 8 * SLOTS:
                continue  # a file another layout wrote: never mix it in
            for i, v in enumerate(memoryview(data).cast("d")):
                totals[i] += v
        return totals

    def exposition(self) -> bytes:
        """The Prometheus text format (version 0.0.4) of every worker's totals."""
        t = self._totals()
        out = [
            "# HELP skewless_http_requests_total HTTP requests served, by endpoint and status.",
            "# TYPE skewless_http_requests_total counter",
        ]
        for e, endpoint in enumerate(ENDPOINTS):
            for s, status in enumerate(STATUSES):
                n = t[_REQUESTS + e * _S + s]
                if n:
                    out.append(
                        f'skewless_http_requests_total{{endpoint="{endpoint}",status="{status}"}} {n:.0f}'
                    )
        out += [
            "# HELP skewless_http_request_duration_seconds Time from request to response sent.",
            "# TYPE skewless_http_request_duration_seconds histogram",
        ]
        for e, endpoint in enumerate(ENDPOINTS):
            counts = t[_BUCKETS + e * _B : _BUCKETS + (e + 1) * _B]
            total = sum(counts)
            if not total:
                continue
            running = 0.0
            for bound, n in zip((*(repr(b) for b in BUCKETS), "+Inf"), counts, strict=True):
                running += n
                out.append(
                    f'skewless_http_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{bound}"}} {running:.0f}'
                )
            label = f'{{endpoint="{endpoint}"}}'
            out.append(f"skewless_http_request_duration_seconds_sum{label} {t[_SUMS + e]!r}")
            out.append(f"skewless_http_request_duration_seconds_count{label} {total:.0f}")
        out += [
            "# HELP skewless_redis_errors_total Redis errors met while serving (the request got 503).",
            "# TYPE skewless_redis_errors_total counter",
        ]
        for k, kind in enumerate(REDIS_ERRORS):
            out.append(f'skewless_redis_errors_total{{kind="{kind}"}} {t[_REDIS + k]:.0f}')
        out += [
            "# HELP skewless_online_values_total Feature values served, by status.",
            "# TYPE skewless_online_values_total counter",
        ]
        for v, status in enumerate(VALUE_STATUSES):
            out.append(f'skewless_online_values_total{{status="{status}"}} {t[_VALUES + v]:.0f}')
        out += [
            "# HELP skewless_http_events_total Events of accepted POST /events requests, by outcome.",
            "# TYPE skewless_http_events_total counter",
        ]
        for k, outcome in enumerate(EVENT_OUTCOMES):
            out.append(f'skewless_http_events_total{{outcome="{outcome}"}} {t[_EVENTS + k]:.0f}')
        log = dict(zip(FEATURE_LOG, t[_LOG:], strict=False))
        out += [
            "# HELP skewless_feature_log_rows_total Served vectors (one per entity row) by what "
            "the feature log did with them: logged, dropped (queue full, or write failed after "
            "retries), sampled out.",
            "# TYPE skewless_feature_log_rows_total counter",
        ]
        for outcome in ("logged", "dropped_queue_full", "dropped_write_failed", "sampled_out"):
            out.append(f'skewless_feature_log_rows_total{{outcome="{outcome}"}} {log[outcome]:.0f}')
        out += [
            "# HELP skewless_feature_log_write_errors_total Failed attempts to write a batch of "
            "the feature log to PostgreSQL (retried with backoff).",
            "# TYPE skewless_feature_log_write_errors_total counter",
            f"skewless_feature_log_write_errors_total {log['write_errors']:.0f}",
            "# HELP skewless_feature_log_queue_rows Served vectors waiting to be written to the "
            "feature log.",
            "# TYPE skewless_feature_log_queue_rows gauge",
            f"skewless_feature_log_queue_rows {log['queue_rows']:.0f}",
        ]
        return ("\n".join(out) + "\n").encode()

    def close(self) -> None:
        if self._map is not None:
            self._slots.release()
            self._map.close()
            self._map = None


STREAM_COUNTERS = (
    (
        "ingested",
        "skewless_stream_events_ingested_total",
        "Events the stream workers stored (new event ids), per stream.",
    ),
    (
        "duplicates",
        "skewless_stream_events_duplicate_total",
        "Events the stream workers received again (an event id already stored), per stream.",
    ),
    (
        "late",
        "skewless_stream_events_late_total",
        "Events older than the stream's allowed lateness when a worker read them (stored all "
        "the same), per stream.",
    ),
    (
        "dead",
        "skewless_stream_events_dead_total",
        "Events the stream workers refused and moved to the dead-letter stream, per stream.",
    ),
    (
        "batches",
        "skewless_stream_batches_total",
        "Micro-batches the stream workers processed, per stream.",
    ),
)
"""The stream workers' counters (skewless.streams.worker.metrics_key: one Redis hash per stream,
shared by every worker): (hash field, metric, help)."""


class StreamMetrics:
    """What the stream workers recorded for one stream: their metrics hash and progress mark."""

    __slots__ = ("counters", "lag_ms", "progress_us")

    def __init__(self, fields: dict, progress: bytes | str | None):
        values = {_text(k): _text(v) for k, v in (fields or {}).items()}
        self.counters = {name: _number(values.get(name)) for name, _, _ in STREAM_COUNTERS}
        lag = values.get("lag_ms")
        self.lag_ms = _number(lag) if lag is not None else None
        self.progress_us = _number(_text(progress)) if progress is not None else None


def stream_exposition(streams: dict[str, StreamMetrics] | None) -> bytes:
    """The stream workers' series, per declared stream; `streams` None: Redis could not be read
    (`skewless_stream_metrics_up 0`, no stream series rather than wrong ones)."""
    out = [
        "# HELP skewless_stream_metrics_up Whether the stream workers' counters could be read "
        "from Redis for this scrape.",
        "# TYPE skewless_stream_metrics_up gauge",
        f"skewless_stream_metrics_up {0 if streams is None else 1}",
    ]
    if not streams:
        return ("\n".join(out) + "\n").encode()
    labels = {name: f'{{stream="{_label(name)}"}}' for name in streams}
    for field, metric, text in STREAM_COUNTERS:
        out += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
        out += [f"{metric}{labels[n]} {m.counters[field]:.0f}" for n, m in streams.items()]
    out += [
        "# HELP skewless_stream_lag_seconds Age of the oldest entry of the last batch a stream "
        "worker processed, when it processed it (wall time).",
        "# TYPE skewless_stream_lag_seconds gauge",
    ]
    out += [
        f"skewless_stream_lag_seconds{labels[n]} {m.lag_ms / 1000!r}"
        for n, m in streams.items()
        if m.lag_ms is not None
    ]
    out += [
        "# HELP skewless_stream_progress_timestamp_seconds The project time (replay clock in a "
        "replay) the stream's writers last caught up to; aggregated views read stale when it "
        "falls more than their TTL behind.",
        "# TYPE skewless_stream_progress_timestamp_seconds gauge",
    ]
    out += [
        f"skewless_stream_progress_timestamp_seconds{labels[n]} {m.progress_us / 1e6!r}"
        for n, m in streams.items()
        if m.progress_us is not None
    ]
    return ("\n".join(out) + "\n").encode()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: str | None) -> float:
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
