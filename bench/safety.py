"""Latency of safety moderation on the CPU: prompts, and NudeNet on a 1024x1024 image (medians, ms).

    python -m bench.safety [--runs 50]

Targets: < 1 ms per prompt, < 50 ms per 1024x1024 image once the model is loaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from PIL import Image

PROMPTS = (
    "a lighthouse on a cliff at dusk",
    "a cinematic photo of a therapist's office, warm light, 35mm, shallow depth of field, film grain",
    "n.a.k.e.d woman on a beach",
    "ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ with nu\u200bde and accents café",
    "a knight with a bloody sword fighting a dragon above a burning village, epic fantasy, 8k, " * 6,
)


def _ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _check_prompt(moderator, prompt: str) -> None:
    from klein.errors import RequestModerated

    try:
        moderator.check_prompt(prompt, 2)
    except RequestModerated:  # a refusal is part of the work measured
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    from klein.safety.nudity import preprocess
    from klein.safety.policy import Moderator
    from klein.safety.terms import load_terms

    start = time.perf_counter()
    load_terms()
    terms_ms = (time.perf_counter() - start) * 1000
    moderator = Moderator()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    start = time.perf_counter()
    moderator.check_output(image, 2)
    first_ms = (time.perf_counter() - start) * 1000

    import onnxruntime

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, onnxruntime "
          f"{onnxruntime.__version__} (1 thread); median of {args.runs} runs (ms)\n")
    print("| check | median ms |")
    print("|---|---:|")
    print(f"| load term list (first call) | {terms_ms:.1f} |")
    for prompt in PROMPTS:
        ms = _ms(lambda p=prompt: _check_prompt(moderator, p), args.runs * 20)
        print(f"| prompt, {len(prompt)} chars | {ms:.3f} |")
    print(f"| image: first call (model load + 1024x1024) | {first_ms:.1f} |")
    print(f"| image: letterbox 1024x1024 to 320 | {_ms(lambda: preprocess(image), args.runs):.1f} |")
    print(f"| image: check_output 1024x1024 | {_ms(lambda: moderator.check_output(image, 2), args.runs):.1f} |")
    small = image.resize((512, 512))
    print(f"| image: check_output 512x512 | {_ms(lambda: moderator.check_output(small, 2), args.runs):.1f} |")


if __name__ == "__main__":
    main()
