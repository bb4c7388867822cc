"""Publishing definitions: `plan` (what would change) and `apply` (publish it).

Publishing spans the layers: registry rows (skewless.registry), as-of functions of external views
(skewless.offline), online keys of retired versions (skewless.online). It lives here, above all
three, and is the one code path of `skewless plan` / `skewless apply` and the Dagster registry
asset. Readers (FeatureStore, `skewless serve`, the training APIs) load what it published
(skewless.registry.published), never the working copy.
"""

from skewless.publish.apply import Applied, apply, refusal
from skewless.publish.plan import Change, Plan, leakage_test_name, plan, working_copy
from skewless.publish.retire import delete_online_keys, retire

__all__ = [
    "Applied",
    "Change",
    "Plan",
    "apply",
    "delete_online_keys",
    "leakage_test_name",
    "plan",
    "refusal",
    "retire",
    "working_copy",
]
