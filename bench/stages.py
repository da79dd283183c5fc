"""Stage times of one generation with the tiny model, by size and output format, and the prompt
cache's hit and miss (medians, ms).

    python -m bench.stages [--runs 5] [--sizes 512,1024,2048]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STAGES = ("text_encode", "denoise", "vae_decode", "safety", "encode", "total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--formats", default="png,jpeg,webp")
    args = parser.parse_args()

    import torch

    from klein.config import Settings
    from klein.generation.engine import Engine
    from klein.request import GenerationRequest

    out = Path(tempfile.mkdtemp(prefix="klein-bench-"))
    engine = Engine.from_settings(Settings(model="tiny", output_dir=out))
    print(f"tiny model on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.runs} runs (ms)\n")
    print("| size | format | " + " | ".join(STAGES) + " |")
    print("|---|---|" + "---:|" * len(STAGES))
    for side in (int(s) for s in args.sizes.split(",")):
        for fmt in args.formats.split(","):
            request = GenerationRequest(prompt="a lighthouse on a cliff at dusk", seed=1, width=side, height=side,
                                        output_format=fmt)
            engine.generate(request)  # warm-up
            runs = [engine.generate(request).timings_ms for _ in range(args.runs)]
            medians = [statistics.median(r[stage] for r in runs) for stage in STAGES]
            print(f"| {side}x{side} | {fmt} | " + " | ".join(f"{m:.1f}" for m in medians) + " |")
    print_prompt_cache(engine, args.runs)


def print_prompt_cache(engine, runs: int) -> None:
    """Text encoding of a repeated prompt (cache hit) against a new one (miss), 512x512."""
    from klein.request import GenerationRequest

    cache = engine.prompt_cache
    request = GenerationRequest(prompt="a red fox in fresh snow, golden hour", seed=2, width=512, height=512)
    times: dict[str, list[float]] = {"miss": [], "hit": []}
    for _ in range(runs):
        cache.clear()
        times["miss"].append(engine.generate(request).timings_ms["text_encode"])
        times["hit"].append(engine.generate(request).timings_ms["text_encode"])
    print("\n| prompt cache | text_encode ms (median) |\n|---|---:|")
    for kind, values in times.items():
        print(f"| {kind} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    main()
