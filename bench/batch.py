"""Batches (num_images): images per second for n images made as one call (Engine.generate_batch
with num_images=n: one pipeline call of batch size n) against n sequential requests (n Engine.generate
calls, seeds s..s+n-1), at each size, side by side in one run.

    python -m bench.batch [--runs 3] [--sizes 512,1024] [--counts 1,2,4] [--model tiny]

Each (size, n) is warmed up once by both paths, then timed `--runs` times, the two paths in turns (which
goes first alternates). Wall time of the engine calls (checks, moderation, generation, encoding; no file
written). Images per second come from the median walls; `one call vs sequential` is the median over runs
of sequential time / one-call time, each run's two times taken back to back (above 1: the batch is faster
per image); `CPU time` is the same ratio of this process's CPU seconds, which other work on a shared
machine disturbs far less than wall time. The per-image stage columns divide the pipeline's own denoise and
VAE decode times by n. n=1 runs the same engine path both ways, so its ratio's distance from 1 is the run's
noise: the verdict under the table calls a batch faster or slower only beyond that (and at least 5%).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads wait without spinning: CPU time is work

PROMPT = "a lighthouse on a cliff at dusk"
SEED = 1
STAGES = ("denoise", "vae_decode")
NOISE_FLOOR = 0.05  # a ratio within 5% of 1 is no difference, however quiet the run
COLUMNS = ("size", "n", "one call img/s", "n sequential img/s", "one call vs sequential", "same, CPU time",
           "denoise ms/img one call", "denoise ms/img sequential", "vae_decode ms/img one call",
           "vae_decode ms/img sequential")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="512,1024", help="square sides, multiples of 16")
    parser.add_argument("--counts", default="1,2,4", help="images per request (num_images, 1..4)")
    parser.add_argument("--model", default="tiny", help="as app.py's --model (a GPU machine: flux2-klein-4b)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    import torch

    from klein.config import Settings
    from klein.generation.engine import Engine

    out = Path(tempfile.mkdtemp(prefix="klein-bench-"))
    engine = Engine.from_settings(Settings(model=args.model, output_dir=out))
    print(f"{engine.model.spec.name} on {engine.model.device} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads); "
          f"{engine.model.spec.steps} steps, jpeg; median "
          f"of {args.runs} runs after a warm-up, the two paths in turns\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---|---:|" + "---:|" * (len(COLUMNS) - 2))
    ratios, cpu_ratios = {}, {}
    for side in (int(s) for s in args.sizes.split(",")):
        for count in (int(n) for n in args.counts.split(",")):
            row = measure(engine, side, count, args.runs)
            ratios[side, count], cpu_ratios[side, count] = row["ratio"], row["cpu_ratio"]
            print(f"| {side}x{side} | {count} | {row['one_ips']:.2f} | {row['seq_ips']:.2f} | {row['ratio']:.2f}x | "
                  f"{row['cpu_ratio']:.2f}x | "
                  + " | ".join(f"{row[path, stage]:.1f}" for stage in STAGES for path in ("one", "seq")) + " |",
                  flush=True)
    print()
    for (side, count), ratio in ratios.items():
        if count > 1:
            print(verdict(side, count, ratio, cpu_ratios[side, count], ratios.get((side, 1))))
    print(f"\nLoad average at start and end: {load_before:.1f}, {os.getloadavg()[0]:.1f} (other work on this "
          "machine slows both paths and widens the noise)")


def verdict(side: int, count: int, ratio: float, cpu_ratio: float, same_path: float | None) -> str:
    """Whether one call beat n sequential requests at this size, beyond the noise its n=1 row shows."""
    band = max(NOISE_FLOOR, abs(same_path - 1) if same_path is not None else 0.0)
    if ratio > 1 + band:
        answer = "faster per image"
    elif ratio < 1 - band:
        answer = "slower per image"
    else:
        answer = "no difference per image"
    return (f"n={count} at {side}x{side}: one call makes {ratio:.2f}x the images per second of {count} sequential "
            f"requests ({cpu_ratio:.2f}x by CPU time): {answer} (noise band +-{band:.0%}"
            + (f", n=1 read {same_path:.2f}x)" if same_path is not None else ")"))


def request(side: int, seed: int, count: int):
    from klein.request import GenerationRequest

    return GenerationRequest(prompt=PROMPT, seed=seed, width=side, height=side, output_format="jpeg",
                             num_images=count)


def one_call(engine, side: int, count: int) -> dict[str, float]:
    """The n images as one generate_batch: its pipeline stages (ms); `measure` adds wall and CPU seconds."""
    batch = engine.generate_batch(request(side, SEED, count), keep_file=False)
    if len(batch.results) != count:
        raise RuntimeError(f"{count - len(batch.results)} of {count} images left out (moderated {batch.moderated})")
    return {stage: batch.results[0].timings_ms[stage] for stage in STAGES}


def sequential(engine, side: int, count: int) -> dict[str, float]:
    """The n images as n generate calls with seeds s..s+n-1: their pipeline stages summed (ms)."""
    stages = dict.fromkeys(STAGES, 0.0)
    for index in range(count):
        timings = engine.generate(request(side, SEED + index, 1), keep_file=False).timings_ms
        for stage in STAGES:
            stages[stage] += timings[stage]
    return stages


def timed(path, engine, side: int, count: int) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    stages = path(engine, side, count)
    return {**stages, "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def measure(engine, side: int, count: int, runs: int) -> dict:
    """One row: images per second of both paths (from the median walls), their ratio, stage ms per image."""
    paths = {"one": one_call, "seq": sequential}
    for path in paths.values():  # warm-up: first-call costs for this shape, the prompt cache
        path(engine, side, count)
    runs_of: dict[str, list[dict[str, float]]] = {"one": [], "seq": []}
    for run in range(runs):
        for name in (("one", "seq") if run % 2 == 0 else ("seq", "one")):
            runs_of[name].append(timed(paths[name], engine, side, count))
    one, seq = runs_of["one"], runs_of["seq"]

    def median(name: str, key: str) -> float:
        return statistics.median(t[key] for t in runs_of[name])

    row = {"one_ips": count / median("one", "wall"), "seq_ips": count / median("seq", "wall"),
           "ratio": statistics.median(s["wall"] / o["wall"] for o, s in zip(one, seq)),
           "cpu_ratio": statistics.median(s["cpu"] / o["cpu"] for o, s in zip(one, seq))}
    for name in paths:
        for stage in STAGES:
            row[name, stage] = median(name, stage) / count
    return row


if __name__ == "__main__":
    main()
