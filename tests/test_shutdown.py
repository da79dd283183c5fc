"""SIGTERM stops the app gracefully (issue 11): the running task is handed back without counting the
attempt, the process exits, and the next start finishes the task. Ordinary restarts never fail a task."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx

from tests.conftest import ROOT, free_port, wait_for_server

KEY = {"x-key": "stop-key"}
TASKS = "/v1/ai/text-to-image/flux-2-klein"


def start(cache_dir, folder) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "KLEIN_CACHE_DIR": str(cache_dir), "KLEIN_API_KEYS": "stop-key",
           "KLEIN_TASKS_DB": str(folder / "tasks.db"), "KLEIN_OUTPUT_DIR": str(folder / "out"),
           "KLEIN_SHUTDOWN_GRACE": "0.2"}
    log = open(folder / f"app-{port}.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_server(url + "/", process)
    return process, url


def status_of(url: str, task_id: str) -> str:
    return httpx.get(f"{url}{TASKS}/{task_id}", headers=KEY, timeout=10).json()["data"]["status"]


def test_sigterm_hands_the_running_task_back_and_the_next_start_finishes_it(cache_dir, tmp_path):
    process, url = start(cache_dir, tmp_path)
    try:
        created = httpx.post(url + TASKS, json={"prompt": "a slow one", "resolution": "2k"}, headers=KEY, timeout=10)
        task_id = created.json()["data"]["task_id"]
        deadline = time.monotonic() + 60
        while status_of(url, task_id) != "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    with sqlite3.connect(tmp_path / "tasks.db") as db:
        status, attempts = db.execute("SELECT status, attempts FROM tasks WHERE id = ?", (task_id,)).fetchone()
    assert status != "FAILED" and attempts == 0, (status, attempts)
    log = next(tmp_path.glob("app-*.log")).read_text()
    assert "Traceback" not in log, log[-3000:]

    process, url = start(cache_dir, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while status_of(url, task_id) != "COMPLETED":
            assert time.monotonic() < deadline and status_of(url, task_id) != "FAILED"
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(30)
