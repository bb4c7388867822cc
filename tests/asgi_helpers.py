"""Shared by the HTTP tests: one request through the serving app's ASGI callable, no server."""

from __future__ import annotations

import orjson


async def asgi_post(app, body: dict, path: str = "/get-online-features") -> tuple[int, dict]:
    """POST `body` as JSON; returns the status and the decoded answer."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])
