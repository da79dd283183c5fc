"""Helpers for the REST tests: an app over the session's tiny engine, loopback HTTP servers, images.

Imported by tests/test_rest_*.py.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Self

from fastapi.testclient import TestClient
from PIL import Image

from klein.config import RestSettings
from klein.rest.api import RestApi

KEY, OTHER_KEY = "test-key-1", "test-key-2"
AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER = {"x-key": OTHER_KEY}
SECRET = "test-webhook-secret"
SMALL = {"width": 128, "height": 128}
TASKS = "/v1/ai/text-to-image/flux-2-klein"


def rest_settings(tmp_path: Path, **overrides) -> RestSettings:
    base = RestSettings(api_keys=(KEY, OTHER_KEY), allow_private_urls=True, fetch_timeout=3,
                        webhook_secret=SECRET, webhook_backoff=0.05, webhook_timeout=3,
                        tasks_db=tmp_path / "tasks.db", generation_timeout=60)
    return replace(base, **overrides)


def make_client(engine, settings: RestSettings) -> tuple[RestApi, TestClient]:
    api = RestApi(engine, settings)
    return api, TestClient(api.create_app(), base_url="http://127.0.0.1")


@contextmanager
def started_client(engine, tmp_path_factory) -> Iterator[TestClient]:
    """A TestClient over the tiny engine, loopback allowed, with the task worker running.

    Test modules wrap it in a module-scoped `client` fixture.
    """
    _, client = make_client(engine, rest_settings(tmp_path_factory.mktemp("rest")))
    with client:
        yield client


def png_bytes(size=(96, 80), color=(30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes | None = None) -> str:
    return "data:image/png;base64," + base64.b64encode(data or png_bytes()).decode()


def decode(body: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(body["image"])))


def wait_for_status(client: TestClient, task_id: str, statuses=("COMPLETED", "FAILED"), timeout=60.0,
                    headers=AUTH) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = client.get(f"{TASKS}/{task_id}", headers=headers).json()["data"]
        if data["status"] in statuses:
            return data
        time.sleep(0.05)
    raise TimeoutError(f"task {task_id} stayed {data['status']}")


class Loopback:
    """A threaded HTTP server on 127.0.0.1 whose handler is a function of the request."""

    def __init__(self, respond):
        self.requests: list[dict] = []
        self.respond = respond
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                record = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                          "body": self.rfile.read(length) if length else b""}
                outer.requests.append(record)
                status, headers, body = outer.respond(record)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def json_bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests if r["method"] == "POST"]
