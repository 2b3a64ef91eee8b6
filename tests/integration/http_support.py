"""Small helpers the HTTP integration tests share: raw requests and server-sent events."""

from __future__ import annotations

import http.client
import json
from typing import Any


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | str | dict | list | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a fresh connection; returns (status, headers, body)."""
    host, port = url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def get_json(url: str, path: str) -> tuple[int, Any]:
    status, _, body = request(url, "GET", path)
    return status, json.loads(body) if body else None


def post_json(
    url: str, path: str, document: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, _, body = request(url, "POST", path, document, headers)
    return status, json.loads(body) if body else None


def sse_events(body: bytes) -> list[Any]:
    """The JSON payloads of a text/event-stream body's `data:` events."""
    events = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            events.append(json.loads(block[len("data: ") :]))
        elif block.strip():
            raise AssertionError(f"not an SSE data event: {block!r}")
    return events
