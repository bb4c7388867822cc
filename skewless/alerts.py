"""Alerts to a webhook: a JSON POST that never takes its caller down with it.

`SKEWLESS_ALERT_WEBHOOK` names the URL (unset: no post). It is read here, at the one place that
posts, because it may carry a token: it is never printed (only its scheme and host are).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 5.0


def webhook_url() -> str | None:
    return os.environ.get("SKEWLESS_ALERT_WEBHOOK") or None


def safe_target(url: str) -> str:
    """Scheme and host of a webhook URL, for logs: its path and query may hold a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{f':{parts.port}' if parts.port else ''}/..."


def post_json(url: str, payload: Mapping[str, Any], timeout: float = TIMEOUT_SECONDS) -> str:
    """POST `payload` as JSON; returns what happened, as one line. Never raises."""
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"posted to {safe_target(url)}: HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"webhook {safe_target(url)} answered HTTP {err.code}"
    except Exception as err:  # a broken webhook must not break the sensor that reports failures
        return f"webhook {safe_target(url)} unreachable: {type(err).__name__}: {err}"
