"""Mixed load on `python app.py --model tiny`: clients that each, in turn, call REST /v1/generate,
create a task and poll it, and call the Gradio API, for a fixed time (loopback only, bounded).

    python -m bench.load [--clients 16] [--seconds 60] [--size 128]

Counts answers by status; any 5xx other than the documented 503 (busy, with Retry-After) and 504
(time limit) is a failure. RSS of the server is sampled throughout.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time

import httpx

from bench.app import AUTH, App, rss_mib

TASKS = "v1/ai/text-to-image/flux-2-klein"
DOCUMENTED_5XX = {503, 504}


def client_loop(app: App, size: int, stop_at: float, counts: collections.Counter, lock: threading.Lock) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    http = httpx.Client(base_url=app.url, headers=AUTH, timeout=120)
    gradio = Client(app.url, headers=AUTH, verbose=False)
    body = {"prompt": "a lighthouse", "width": size, "height": size}
    turn = 0
    while time.monotonic() < stop_at:
        kind = ("sync", "task", "gradio")[turn % 3]
        turn += 1
        try:
            if kind == "sync":
                status = http.post("v1/generate", json=body).status_code
            elif kind == "task":
                status = run_task(http, body, stop_at)
            else:
                gradio.predict(prompt="a heron", custom_size=True, width=size, height=size, api_name="/text_to_image")
                status = 200
        except QueueError:
            status = 503
        except AppError:
            status = 422
        except httpx.HTTPError as exc:
            status = f"transport {type(exc).__name__}"
        except Exception as exc:  # counted, so the test sees it: a client must never die silently
            status = f"error {type(exc).__name__}"
        with lock:
            counts[(kind, status)] += 1
        if status == 503:
            time.sleep(0.5)


def run_task(http: httpx.Client, body: dict, stop_at: float) -> int | str:
    created = http.post(TASKS, json=body)
    if created.status_code != 200:
        return created.status_code
    task_id = created.json()["data"]["task_id"]
    while time.monotonic() < stop_at + 60:
        answer = http.get(f"{TASKS}/{task_id}")
        if answer.status_code != 200:
            return answer.status_code
        if answer.json()["data"]["status"] in ("COMPLETED", "FAILED"):
            return answer.json()["data"]["status"]
        time.sleep(0.2)
    return "unfinished"


def warm_up(app: App, size: int) -> None:
    from gradio_client import Client

    body = {"prompt": "warm up", "width": size, "height": size}
    httpx.post(app.url + "v1/generate", json=body, headers=AUTH, timeout=60).raise_for_status()
    run_task(httpx.Client(base_url=app.url, headers=AUTH, timeout=60), body, time.monotonic() + 60)
    Client(app.url, headers=AUTH, verbose=False).predict(prompt="warm up", custom_size=True, width=size, height=size,
                                                         api_name="/text_to_image")


def load(clients: int, seconds: float, size: int, cache_dir: str) -> dict:
    app = App(cache_dir)
    try:
        app.wait_ready()
        warm_up(app, size)  # what loads once (the detector, first allocations) is not growth under load
        counts: collections.Counter = collections.Counter()
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds
        threads = [threading.Thread(target=client_loop, args=(app, size, stop_at, counts, lock))
                   for _ in range(clients)]
        rss = [rss_mib(app.process.pid)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            rss.append(rss_mib(app.process.pid))
            time.sleep(0.5)
        return {"counts": counts, "rss_start": rss[0], "rss_peak": max(rss), "rss_end": rss[-1]}
    finally:
        app.stop()


def undocumented_5xx(counts: collections.Counter) -> int:
    return sum(n for (_, status), n in counts.items()
               if isinstance(status, int) and status >= 500 and status not in DOCUMENTED_5XX)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        figures = load(args.clients, args.seconds, args.size, cache_dir)
    print(f"{args.clients} clients for {args.seconds:.0f} s, {args.size}x{args.size}\n")
    print("| path | answer | count |\n|---|---|---:|")
    for (kind, status), count in sorted(figures["counts"].items(), key=str):
        print(f"| {kind} | {status} | {count} |")
    print(f"\n| undocumented 5xx | RSS at start | peak | end |\n|---:|---:|---:|---:|\n"
          f"| {undocumented_5xx(figures['counts'])} | {figures['rss_start']:.0f} MiB | {figures['rss_peak']:.0f} MiB | "
          f"{figures['rss_end']:.0f} MiB |")


if __name__ == "__main__":
    main()
