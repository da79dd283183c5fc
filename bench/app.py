"""The app as users meet it, with the tiny model: overhead of each path over a direct engine call,
cold start, prompt cache, 16 concurrent users, memory.

    python -m bench.app [--load-seconds 30] [--users 16]

Every table is from one run; latencies are medians unless marked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Two torch processes share 2 cores here: spinning OpenMP threads would slow each other (the
# benchmark's direct engine and the app under test), so both wait passively.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}  # with keys set, the Gradio API needs one too
PROMPT = "a lighthouse on a cliff at dusk"


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class App:
    """`python app.py --model tiny` in a child process."""

    def __init__(self, cache_dir: str, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "KLEIN_CACHE_DIR": cache_dir, "KLEIN_API_KEYS": API_KEY}
        self.log = tempfile.TemporaryFile(mode="w+")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(self.port), *extra],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    def warm_up_ms(self) -> float:
        """The start-up warm-up generation's time, as the app logged it."""
        self.log.seek(0)
        found = re.search(r"warm-up generation: ([\d.]+) ms", self.log.read())
        return float(found.group(1)) if found else float("nan")

    def wait_ready(self, timeout: float = 120) -> float:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "gradio_api/info", headers=AUTH, timeout=2).status_code == 200:
                    return (time.perf_counter() - self.started) * 1000
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError("app did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def table(header: list[str], rows: list[list]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else str(c) for c in row) + " |")
    print()


def gradio_http_call(http) -> float:
    """One text_to_image call over Gradio's plain HTTP API: submit, read the SSE result, fetch the file.

    gradio_client polls its message queue every 50 ms (gradio_client/utils.py), so this path shows
    what the server itself adds. Returns the engine's own total (ms) from the generation info.
    """
    body = {"data": [PROMPT, "square_1_1", "1k", 1, False, "jpeg", False, 1024, 1024, 4, 1.0, 2]}
    event_id = http.post("gradio_api/call/text_to_image", json=body).json()["event_id"]
    with http.stream("GET", f"gradio_api/call/text_to_image/{event_id}") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                if event == "error":
                    raise RuntimeError(line)
                data = json.loads(line[5:])
                http.get(data[0]["url"]).raise_for_status()
                return engine_total(data[2])
    raise RuntimeError("no result")


def engine_total(info: dict) -> float:
    """The engine's total time (ms), from the generation's fields the endpoint returns as its third output."""
    return float(info["timings_ms"]["total"])


def bench_overhead(app: App, cache_dir: str, runs: int) -> None:
    import httpx
    from gradio_client import Client

    from klein.config import Settings
    from klein.generation.engine import Engine
    from klein.request import GenerationRequest

    engine = Engine.from_settings(Settings(model="tiny", cache_dir=Path(cache_dir)))
    client = Client(app.url, headers=AUTH, verbose=False)
    http = httpx.Client(base_url=app.url, headers=AUTH, timeout=60)

    def rest() -> float:
        answer = http.post("v1/generate", json={"prompt": PROMPT, "seed": 1, "aspect_ratio": "square"},
                           headers={"Authorization": f"Bearer {API_KEY}"})
        answer.raise_for_status()
        return answer.json()["timings_ms"]["total"]

    # Each path returns the engine's own total, so the time spent outside the engine is measured too.
    paths = {
        "direct engine call": lambda: engine.generate(GenerationRequest(prompt=PROMPT, seed=1)).timings_ms["total"],
        "gradio_client": lambda: engine_total(client.predict(prompt=PROMPT, seed=1, randomize_seed=False,
                                                             api_name="/text_to_image")[2]),
        "Gradio HTTP API (/gradio_api/call + download)": lambda: gradio_http_call(http),
        "REST POST /v1/generate (JSON, base64 image)": rest,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for call in paths.values():
        call()  # warm-up: the prompt cache and connections are warm for every path
    for _ in range(runs):  # interleaved, so drift hits every path alike
        for name, call in paths.items():
            t0 = time.perf_counter()
            inside = call()
            times[name].append(((time.perf_counter() - t0) * 1000, inside))
    base = statistics.median(t for t, _ in times["direct engine call"])
    print(f"### Overhead over a direct engine call (1024x1024 jpeg, {runs} interleaved runs)\n")
    table(["path", "median ms", "extra ms vs direct", "median ms outside the engine"],
          [[name, statistics.median(t for t, _ in rows), statistics.median(t for t, _ in rows) - base,
            statistics.median(t - inside for t, inside in rows)] for name, rows in times.items()])


def bench_cold_start(cache_dir: str, runs: int) -> None:
    from gradio_client import Client

    rows = []
    for _ in range(runs):
        app = App(cache_dir)
        try:
            ready = app.wait_ready()
            client = Client(app.url, headers=AUTH, verbose=False)
            request_ms = []
            for prompt in (PROMPT, PROMPT + ", second"):  # two prompts: the second misses the prompt cache too
                t0 = time.perf_counter()
                client.predict(prompt=prompt, api_name="/text_to_image")
                request_ms.append((time.perf_counter() - t0) * 1000)
            first = ready + request_ms[0]
            rows.append([ready, app.warm_up_ms(), first, request_ms[0], request_ms[1], rss_mib(app.process.pid)])
        finally:
            app.stop()
    print(f"### Cold start with the start-up warm-up (1024x1024; median of {runs})\n")
    print("Process start to a ready server (the warm-up generation included), to the first image; then the "
          "first and the second request's own time: with the warm-up the first user waits no longer than the "
          "second.\n")
    table(["to ready server ms", "warm-up ms (in start-up)", "to first image ms", "first request ms",
           "second request ms", "RSS after MiB"],
          [[statistics.median(r[i] for r in rows) for i in range(6)]])


def bench_load(cache_dir: str, users: int, seconds: float, queue_size: int) -> None:
    from gradio_client import Client

    app = App(cache_dir, "--queue-size", str(queue_size))
    app.wait_ready()
    idle = rss_mib(app.process.pid)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def user() -> None:
        client = Client(app.url, headers=AUTH, verbose=False)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                client.predict(prompt=PROMPT, api_name="/text_to_image")
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)
            except Exception as exc:  # counted, by kind: a full queue is expected past its size
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                time.sleep(0.5)

    threads = [threading.Thread(target=user) for _ in range(users)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    peak = idle
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mib(app.process.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    hwm = rss_mib(app.process.pid, "VmHWM")
    app.stop()
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [float("nan")] * 19
    print(f"### {users} concurrent gradio_client users for {seconds:.0f} s, queue size {queue_size}\n")
    table(["images", "images/s", "p50 ms", "p95 ms", "errors", "idle RSS MiB", "peak RSS MiB"],
          [[len(latencies), len(latencies) / wall, statistics.median(latencies) if latencies else float("nan"),
            q[18], ", ".join(f"{k}: {v}" for k, v in errors.items()) or "none", idle, max(peak, hwm)]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--load-seconds", type=float, default=30)
    parser.add_argument("--cold-start-only", action="store_true", help="only the cold-start table")
    args = parser.parse_args()
    cache_dir = tempfile.mkdtemp(prefix="klein-bench-cache-")
    print(f"tiny model, {os.cpu_count()} CPU cores\n")
    if args.cold_start_only:
        return bench_cold_start(cache_dir, runs=3)
    app = App(cache_dir)
    try:
        app.wait_ready()
        bench_overhead(app, cache_dir, args.runs)
    finally:
        app.stop()
    bench_cold_start(cache_dir, runs=3)
    bench_load(cache_dir, args.users, args.load_seconds, queue_size=32)
    bench_load(cache_dir, args.users, args.load_seconds / 2, queue_size=4)


if __name__ == "__main__":
    main()
