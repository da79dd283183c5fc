"""What inpainting adds to memory: RSS after start-up and a first text-to-image, then after the first
inpaint (which makes the inpaint pipeline from the loaded components), and the time of each.

    python -m bench.inpaint [--runs 5]

The inpaint pipeline must share the loaded weights: the parameter bytes it holds that the text-to-image
pipeline does not are counted too (0 when nothing is duplicated).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def own_parameter_bytes(inpainter, pipe) -> int:
    """Bytes of parameters the inpaint pipeline holds that the loaded pipeline does not."""
    shared = {p.data_ptr() for name in ("transformer", "text_encoder", "vae") for p in getattr(pipe, name).parameters()}
    return sum(p.numel() * p.element_size() for name in ("transformer", "text_encoder", "vae")
               for p in getattr(inpainter, name).parameters() if p.data_ptr() not in shared)


def main() -> int:
    from PIL import Image, ImageDraw

    from klein.config import Settings
    from klein.generation.engine import Engine
    from klein.generation.inpaint import inpaint_pipeline
    from klein.request import GenerationRequest

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(model="tiny", cache_dir=Path(tempfile.mkdtemp()), image_moderation=False)
    engine = Engine.from_settings(settings)
    picture = Image.open(ASSETS / "mountains.jpg").convert("RGB").resize((1024, 768))
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).ellipse((300, 200, 700, 560), fill=255)

    def timed(request: GenerationRequest) -> float:
        started = time.perf_counter()
        engine.generate(request, keep_file=False)
        return (time.perf_counter() - started) * 1000

    text = GenerationRequest(prompt="a lighthouse", width=1024, height=768, seed=1)
    edit = GenerationRequest(prompt="a lighthouse", images=(picture,), aspect_ratio="match_input", seed=1)
    paint = GenerationRequest(prompt="a red balloon", images=(picture,), mask=mask, seed=1)
    timed(text)
    before = rss_mib()
    first_inpaint = timed(paint)
    after = rss_mib()
    rows = {name: statistics.median(timed(request) for _ in range(args.runs))
            for name, request in (("text to image 1024x768", text), ("edit 1024x768", edit),
                                  ("inpaint 1024x768", paint))}
    duplicated = own_parameter_bytes(inpaint_pipeline(engine.model), engine.model.pipe)
    print(f"tiny model, {os.cpu_count()} CPU cores; median of {args.runs} runs\n")
    print("| RSS after start-up and a first image MiB | after the first inpaint MiB | added | parameter bytes "
          "not shared |")
    print("|---:|---:|---:|---:|")
    print(f"| {before:.0f} | {after:.0f} | {after - before:+.0f} MiB ({(after - before) / before:+.1%}) | "
          f"{duplicated} |\n")
    print(f"| workflow | median ms |\n|---|---:|\n| first inpaint (makes the pipeline) | {first_inpaint:.0f} |")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
