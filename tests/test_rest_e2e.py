"""End to end: `python app.py --model tiny` with KLEIN_API_KEYS set, REST and UI on one port;
a SIGKILL mid-task and a restart lose nothing."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT, free_port, wait_for_server
from conftest_rest import SECRET, TASKS, Loopback
from PIL import Image

from klein.rest.webhooks import verify

KEY = "e2e-key"
AUTH = {"x-freepik-api-key": KEY}


class LaunchedApp:
    """The app as a child process; restartable on the same task database."""

    def __init__(self, cache_dir, tmp_path):
        self.env = {**os.environ, "KLEIN_CACHE_DIR": str(cache_dir), "KLEIN_API_KEYS": f"other,{KEY}",
                    "KLEIN_OUTPUT_DIR": str(tmp_path / "out"), "KLEIN_TASKS_DB": str(tmp_path / "tasks.db"),
                    "KLEIN_ALLOW_PRIVATE_URLS": "1", "KLEIN_WEBHOOK_SECRET": SECRET, "KLEIN_WEBHOOK_BACKOFF": "0.1"}
        self.log_path = tmp_path / "app.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        port = free_port()
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        wait_for_server(self.url + "/", self.process)
        return self.url

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="module")
def app(cache_dir, tmp_path_factory):
    launched = LaunchedApp(cache_dir, tmp_path_factory.mktemp("rest-e2e"))
    try:
        launched.start()
        yield launched
    except Exception:
        print(launched.log_path.read_text()[-5000:])
        raise
    finally:
        launched.stop()
    assert KEY not in launched.log_path.read_text(), "an API key reached the log"
    assert SECRET not in launched.log_path.read_text(), "the webhook secret reached the log"


def poll(url: str, task_id: str, statuses=("COMPLETED", "FAILED"), timeout=90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = httpx.get(f"{url}{TASKS}/{task_id}", headers=AUTH, timeout=10).json()["data"]
        if data["status"] in statuses:
            return data
        time.sleep(0.1)
    raise TimeoutError(f"task {task_id} is still {data['status']}")


def test_ui_and_rest_share_the_port(app):
    assert httpx.get(app.url + "/", timeout=10).status_code == 200
    assert httpx.get(app.url + "/docs", timeout=10).status_code == 200
    assert "/v1/generate" in httpx.get(app.url + "/openapi.json", timeout=10).json()["paths"]
    assert httpx.post(app.url + "/v1/generate", json={"prompt": "x"}, timeout=10).status_code == 401


def test_sync_generate_json_and_raw(app):
    body = {"prompt": "a lighthouse", "seed": 9, "width": 128, "height": 128}
    as_json = httpx.post(app.url + "/v1/generate", json=body, headers={"x-key": KEY}, timeout=60)
    assert as_json.status_code == 200, as_json.text
    assert (as_json.json()["seed"], as_json.json()["model"]) == (9, "tiny")
    raw = httpx.post(app.url + "/v1/generate", json=body, headers={**AUTH, "Accept": "image/png"}, timeout=60)
    assert Image.open(io.BytesIO(raw.content)).size == (128, 128)
    files = {"images": ("a.png", raw.content, "image/png")}
    form = httpx.post(app.url + "/v1/generate", data={"prompt": "edit", "width": "128", "height": "128"},
                      files=files, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert form.json()["workflow"] == "edit"


def test_task_with_webhook(app):
    with Loopback(lambda r: (200, {}, b"")) as receiver:
        created = httpx.post(app.url + TASKS, json={"prompt": "x", "width": 128, "height": 128,
                                                    "webhook_url": receiver.url}, headers=AUTH, timeout=10)
        task_id = created.json()["data"]["task_id"]
        done = poll(app.url, task_id)
        image = httpx.get(done["generated"][0], headers=AUTH, timeout=10)
        assert Image.open(io.BytesIO(image.content)).size == (128, 128)
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [b["status"] for b in receiver.json_bodies()] == ["CREATED", "IN_PROGRESS", "COMPLETED"]
    for r in receiver.requests:
        assert verify(SECRET, r["headers"]["X-Klein-Timestamp"], r["body"], r["headers"]["X-Klein-Signature"])


def test_sigkill_mid_task_then_restart_loses_nothing(app):
    big = httpx.post(app.url + TASKS, json={"prompt": "big", "resolution": "2k"}, headers=AUTH, timeout=10)
    small = httpx.post(app.url + TASKS, json={"prompt": "small", "width": 128, "height": 128},
                       headers=AUTH, timeout=10)
    big_id, small_id = big.json()["data"]["task_id"], small.json()["data"]["task_id"]
    poll(app.url, big_id, statuses=("IN_PROGRESS",))
    app.kill()
    url = app.start()
    for task_id in (big_id, small_id):
        done = poll(url, task_id)
        assert done["status"] == "COMPLETED", done
        assert httpx.get(done["generated"][0], headers=AUTH, timeout=10).status_code == 200
    assert poll(url, big_id)["width"] == 2048
