"""Memory under many distinct prompts: RSS of `python app.py --model tiny` before and after N new
prompts through REST and the Gradio API (loopback only, bounded in count and time).

    python -m bench.soak [--prompts 200] [--cache-mb 16] [--size 64]

Every new prompt misses the prompt cache, so the text encoder runs each time: a leak per encode
shows as RSS growing with N. The budget is the prompt cache's cap plus 150 MiB (issue 11).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import httpx

from bench.app import API_KEY, App, rss_mib

BUDGET_MIB = 150


def soak(prompts: int, cache_mb: int, size: int, cache_dir: str) -> dict[str, float]:
    """RSS (MiB) of the server before, after half the prompts (REST) and after all (Gradio API too)."""
    from gradio_client import Client

    app = App(cache_dir, "--prompt-cache-mb", str(cache_mb))
    try:
        app.wait_ready()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"width": size, "height": size, "seed": 1, "output_format": "png"}
        client = Client(app.url, headers=headers, verbose=False)
        # Warm both paths first: the first calls load lazily what stays (the detector, Gradio's caches).
        httpx.post(app.url + "v1/generate", json={"prompt": "warm up", **body}, headers=headers, timeout=60)
        client.predict(prompt="warm up too", custom_size=True, width=size, height=size, api_name="/text_to_image")
        figures = {"before": rss_mib(app.process.pid)}
        started = time.perf_counter()
        half = prompts // 2
        for index in range(half):
            answer = httpx.post(app.url + "v1/generate", json={"prompt": f"a red fox number {index} in the snow",
                                                               **body}, headers=headers, timeout=60)
            answer.raise_for_status()
        figures["after REST"] = rss_mib(app.process.pid)
        for index in range(prompts - half):
            client.predict(prompt=f"a blue heron number {index} by a lake", custom_size=True, width=size,
                           height=size, api_name="/text_to_image")
        figures["after Gradio API"] = rss_mib(app.process.pid)
        figures["seconds"] = time.perf_counter() - started
        return figures
    finally:
        app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--cache-mb", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        figures = soak(args.prompts, args.cache_mb, args.size, cache_dir)
    growth = figures["after Gradio API"] - figures["before"]
    print(f"| distinct prompts | prompt cache cap | RSS before | after {args.prompts // 2} via REST | "
          f"after all (+ Gradio API) | growth | budget (cap + {BUDGET_MIB} MiB) | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.prompts} | {args.cache_mb} MiB | {figures['before']:.0f} MiB | {figures['after REST']:.0f} MiB | "
          f"{figures['after Gradio API']:.0f} MiB | {growth:+.0f} MiB | {args.cache_mb + BUDGET_MIB} MiB | "
          f"{figures['seconds']:.0f} |")


if __name__ == "__main__":
    main()
