"""Workers on Ray Serve (docs/workers.md), side by side in one run with the tiny model on this machine's
CPU: one torch thread per generation everywhere, so the comparison is of processes, not of threads.

  1. the latency of one 512x512 request in one process (Engine) and through one worker (WorkerEngine),
     interleaved: what the worker hop adds, and its queue and transfer stages;
  2. the throughput of N concurrent 512x512 requests with 1 worker and with 2 workers (one Ray instance,
     two Serve applications, measured in turns).

    python -m bench.workers [--runs 10] [--rounds 3] [--concurrent 8] [--size 512]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a shared core

PROMPT = "a lighthouse on a cliff at dusk"
TARGET = 1.5  # 2 workers on 2 cores: at least this many times the throughput of 1 worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="sequential requests for the latency medians")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds, 1 and 2 workers alternating")
    parser.add_argument("--concurrent", type=int, default=8, help="requests sent at once for the throughput")
    parser.add_argument("--size", type=int, default=512, help="width and height (a multiple of 16)")
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]

    import torch

    from klein.config import Settings
    from klein.generation.engine import Engine

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="kbw-", dir="/tmp"))  # short: Ray's socket paths are limited
    # Three replicas in all: one application of 1 worker, one of 2, measured in turns so that whatever
    # else this machine does weighs on both alike.
    settings = Settings(model="tiny", cache_dir=work / "cache", output_dir=work / "out", workers=3,
                        queue_size=args.concurrent)
    try:
        local = Engine.from_settings(settings)
        hop, walls = run_workers(local, settings, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(hop, walls, args)


def report(hop: dict[str, list[float]], walls: dict[int, list[tuple[float, int]]], args) -> None:
    median = {name: statistics.median(values) for name, values in hop.items()}
    print(f"tiny model, {args.size}x{args.size}, jpeg, 4 steps; {os.cpu_count()} cores; one torch thread per "
          f"generation\n\nLatency, median of {args.runs} sequential requests, the two paths interleaved:\n")
    print("| path | latency ms | queue ms | transfer ms |\n|---|---:|---:|---:|")
    print(f"| one process (Engine) | {median['local']:.0f} | | |")
    print(f"| through 1 worker (WorkerEngine) | {median['total']:.0f} | {median['queue']:.1f} | "
          f"{median['transfer']:.1f} |")
    print(f"| **the worker hop adds** | **{median['total'] - median['local']:.0f}** | | |")
    print(f"\n{args.concurrent} concurrent requests sent at once; median of {args.rounds} rounds, 1 and 2 workers "
          "in turns:\n")
    print("| workers | wall s | images/s | vs 1 worker | workers used |\n|---|---:|---:|---:|---:|")
    wall = {count: statistics.median(w for w, _ in runs) for count, runs in walls.items()}
    for count, runs in walls.items():
        used = min(u for _, u in runs) if count else "-"
        name = f"{count}" if count else "none: one process (Engine, one lane)"
        print(f"| {name} | {wall[count]:.2f} | {args.concurrent / wall[count]:.2f} | {wall[1] / wall[count]:.2f}x "
              f"| {used} |")
    ratio = wall[1] / wall[2]
    print(f"\n2 workers / 1 worker throughput: {ratio:.2f}x (target >= {TARGET}x: "
          f"{'met' if ratio >= TARGET else 'NOT met'}); load average at start and end: "
          f"{args.load_before:.1f}, {os.getloadavg()[0]:.1f} (other work on this machine lowers the ratio)")


def run_workers(local, settings, work: Path, args) -> tuple[dict[str, list[float]], dict[int, list]]:
    """One Ray instance with two applications: 1 worker and 2 workers, one torch thread each."""
    from klein.generation import workers_cluster
    from klein.generation.workers import WorkerEngine

    cluster = workers_cluster.connect(settings, str(work / "ray"))
    try:
        engines = {}
        for count in (1, 2):
            handle = workers_cluster.deploy(settings, workers_cluster.Cluster(count, 0, True, "local"), threads=1,
                                            app=f"klein-{count}w")
            engines[count] = WorkerEngine(handle, settings, handle.describe.remote().result(), count)
        hop = interleaved(local, engines[1], args.runs, args.size)
        walls: dict[int, list] = {0: [], 1: [], 2: []}  # 0: one process, for comparison
        for _ in range(args.rounds):
            for count, engine in ((0, local), *engines.items()):
                walls[count].append(throughput(engine, args.concurrent, args.size))
        return hop, walls
    finally:
        workers_cluster.shutdown(cluster)


def request(seed: int, size: int):
    from klein.request import GenerationRequest

    return GenerationRequest(PROMPT, seed=seed, width=size, height=size, output_format="jpeg")


def interleaved(local, worker, runs: int, size: int) -> dict[str, list[float]]:
    """Sequential requests, one in this process then the same through the worker, `runs` times."""
    for engine in (local, worker):  # warm: the prompt cache, first-call costs
        engine.generate(request(0, size), keep_file=False)
    out: dict[str, list[float]] = {"local": [], "total": [], "queue": [], "transfer": []}
    for seed in range(1, runs + 1):
        out["local"].append(local.generate(request(seed, size), keep_file=False).timings_ms["total"])
        timings = worker.generate(request(seed, size), keep_file=False).timings_ms
        for name in ("total", "queue", "transfer"):
            out[name].append(timings[name])
    return out


def throughput(engine, count: int, size: int) -> tuple[float, int]:
    """Seconds for `count` requests sent at once (each in its thread, as Gradio and REST do), and how many
    workers made them. Every worker is warmed first, so no one pays its first call inside the timing."""
    warm = [threading.Thread(target=engine.generate, args=(request(99, size),), kwargs={"keep_file": False})
            for _ in range(getattr(engine, "replicas", 1))]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join()
    made: list = []
    threads = [threading.Thread(target=lambda s=seed: made.append(engine.generate(request(s, size), keep_file=False)))
               for seed in range(100, 100 + count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if len(made) != count:
        raise RuntimeError(f"{count - len(made)} of {count} requests failed")
    return wall, len({result.worker for result in made})


if __name__ == "__main__":
    main()
