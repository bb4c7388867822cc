"""Monitoring what was served: the serving-skew monitor (served = trained, checked on logged vectors).

from skewless.monitoring import run_serving_skew
print(run_serving_skew().summary())   # the vectors logged since the last run, against training
"""

from skewless.monitoring.serving_skew import (
    FeatureSkew,
    SkewReport,
    monitor_serving_skew,
    run_serving_skew,
)

__all__ = ["FeatureSkew", "SkewReport", "monitor_serving_skew", "run_serving_skew"]
