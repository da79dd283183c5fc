"""The cost of LoRA adapters with the tiny model: the first use of an adapter (its load), switching between
two loaded ones, and turning them off, next to a generation without one (medians, ms).

    python -m bench.loras [--runs 5] [--size 1024]

The adapters are rank-16 LoRAs on every linear layer of the tiny transformer, built with peft and
saved as diffusers writes them. `lora` is the time run_job spends making the job's adapters active,
inside the GPU lane; `total` is the whole generation; `lora / total` is each run's share, median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RANK = 16


def build_adapter(tiny_dir: Path, folder: Path, name: str, seed: int) -> None:
    """A LoRA on every linear layer of the tiny transformer, saved as diffusers' save_lora_weights does."""
    import torch
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = Flux2Transformer2DModel.load_config(str(tiny_dir / "transformer"))
    transformer = Flux2Transformer2DModel.from_config(config)
    torch.manual_seed(seed)
    targets = [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, init_lora_weights=False))
    Flux2KleinPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                         weight_name=f"{name}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()

    import torch

    from klein.config import Settings
    from klein.generation.adapters import adapters_for
    from klein.generation.engine import Engine
    from klein.request import GenerationRequest, LoraSpec

    work = Path(tempfile.mkdtemp(prefix="klein-bench-loras-"))
    engine = Engine.from_settings(Settings(model="tiny", output_dir=work / "out", lora_dir=work / "loras"))
    for seed, name in enumerate(("ink", "pencil"), start=1):
        build_adapter(Path(engine.model.source), engine.loras.folder, name, seed)

    def generate(*loras: LoraSpec) -> dict[str, float]:
        request = GenerationRequest(prompt="a lighthouse on a cliff at dusk", seed=1, width=args.size,
                                    height=args.size, loras=loras)
        return engine.generate(request, keep_file=False).timings_ms

    generate()  # warm-up
    base = [generate() for _ in range(args.runs)]
    first = [generate(LoraSpec("ink")), generate(LoraSpec("pencil"))]  # each adapter's first use loads it
    switches = [generate(LoraSpec("pencil" if i % 2 else "ink")) for i in range(2 * args.runs)]
    stacked = [generate(LoraSpec("ink"), LoraSpec("pencil", 0.5)) for _ in range(args.runs)]
    off = [generate() for _ in range(args.runs)]
    state = adapters_for(engine.model.pipe)

    print(f"tiny model on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {args.size}x{args.size} jpeg, rank-{RANK} "
          f"adapters of {state.size_bytes / len(state) / 2**10:.0f} KiB each, {state.loads} loads; median of "
          f"{args.runs} runs (ms)\n")
    print("| case | lora | total | lora / total |")
    print("|---|---:|---:|---:|")
    for case, runs in (("no LoRA", base), ("first use of an adapter (load)", first),
                       ("switch between two loaded adapters", switches), ("two stacked, loaded", stacked),
                       ("no LoRA after LoRAs (disabled)", off)):
        lora = statistics.median(t.get("lora", 0.0) for t in runs)
        total = statistics.median(t["total"] for t in runs)
        share = statistics.median(t.get("lora", 0.0) / t["total"] for t in runs)  # per run: robust to a busy machine
        print(f"| {case} | {lora:.1f} | {total:.1f} | {100 * share:.2f}% |")


if __name__ == "__main__":
    main()
