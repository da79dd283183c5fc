"""What the REST API adds to a generation: the same small request as a direct engine call and
through POST /v1/generate on a launched `python app.py --model tiny`, interleaved.

    python -m bench.rest [--runs 30] [--size 128]

Prints a markdown table of median latencies and the median overhead in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Two torch processes share the CPU here; OpenMP threads that spin after work would slow the other one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from bench.app import App

PROMPT = "a lighthouse on a cliff at dusk"
KEY = "bench-key"  # bench.app.App starts the app with KLEIN_API_KEYS=bench-key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size", type=int, default=128, help="width and height (a multiple of 16)")
    args = parser.parse_args()

    import httpx

    from klein.config import Settings
    from klein.generation.engine import Engine
    from klein.generation.pipeline import load_model
    from klein.request import GenerationRequest

    cache_dir = tempfile.mkdtemp(prefix="klein-bench-")
    model = load_model("tiny", Path(cache_dir))
    engine = Engine(model, Settings(model="tiny", cache_dir=model.source, output_dir=Path(cache_dir) / "out"))
    app = App(cache_dir)
    try:
        app.wait_ready()
        body = {"prompt": PROMPT, "seed": 1, "width": args.size, "height": args.size, "output_format": "jpeg"}
        client = httpx.Client(base_url=app.url, headers={"x-key": KEY}, timeout=60)
        paths = {
            "direct engine.generate": lambda: engine.generate(GenerationRequest(
                PROMPT, seed=1, width=args.size, height=args.size, output_format="jpeg")),
            "POST /v1/generate (JSON, base64 image)": lambda: client.post("v1/generate", json=body).raise_for_status(),
            "POST /v1/generate (Accept: image/jpeg)": lambda: client.post(
                "v1/generate", json=body, headers={"Accept": "image/jpeg"}).raise_for_status(),
        }
        for call in paths.values():  # warm up: prompt cache, first-request costs
            call(), call()
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.runs):
            for name, call in paths.items():
                t0 = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t0) * 1000)
    finally:
        app.stop()
    direct = statistics.median(times["direct engine.generate"])
    print(f"\n{args.runs} interleaved runs, {args.size}x{args.size} JPEG, tiny model, one process each\n")
    print("| path | median ms | p90 ms | overhead vs direct (median ms) |")
    print("|---|---:|---:|---:|")
    for name, samples in times.items():
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        print(f"| {name} | {median:.1f} | {p90:.1f} | {median - direct:+.1f} |")


if __name__ == "__main__":
    main()
