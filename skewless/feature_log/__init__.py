"""Feature logging: every served vector, written to `monitoring.feature_log` off the request path.

HTTP serving logs every read (turn it off with SKEWLESS_FEATURE_LOG=off); the Python client logs
when asked (`FeatureStore(log_features=True)` or SKEWLESS_FEATURE_LOG_PYTHON=1). One row per
entity row: request id, served-at time (the `now` the read judged values at), entity keys, request
data, each output's pinned reference, value and status. The serving-skew monitor reads them back
(`read_log`) and recomputes each vector with the training API at its served-at time.
"""

from skewless.feature_log.config import FeatureLogSettings, settings
from skewless.feature_log.ids import new_request_id, request_id
from skewless.feature_log.table import ensure_table, partitions, prune, read_log
from skewless.feature_log.writer import FeatureLogger, FeatureLogStats

__all__ = [
    "FeatureLogSettings",
    "FeatureLogStats",
    "FeatureLogger",
    "ensure_table",
    "new_request_id",
    "partitions",
    "prune",
    "read_log",
    "request_id",
    "settings",
]
