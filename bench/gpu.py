"""GPU readiness: the full-size flux2-klein-4b architecture with random weights, timed at 1024x1024.

The speed of random weights is the speed of the real ones, so this needs no download.

    python -m bench.gpu                 # on a CUDA machine: the tables; elsewhere: the meta-device check
    python -m bench.gpu --smoke         # the same harness with the tiny architecture on the CPU (CI)

Variants: eager, fused QKV, attention backends, torch.compile of the repeated blocks; each with and
without the prompt-embedding cache. Stage times are medians in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# FLUX.2 [klein] 4B: 5 double + 20 single blocks, 24 heads x 128, Qwen3-4B text encoder.
TRANSFORMER_4B = dict(patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
                      num_attention_heads=24, joint_attention_dim=7680, mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32),
                      guidance_embeds=False)
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                rope_theta=1000000, tie_word_embeddings=True)
EXPECTED_TRANSFORMER_PARAMS = 3.88e9
STAGES = ("text_encode", "denoise", "vae_decode", "safety", "encode", "total")


def count_on_meta() -> int:
    from diffusers import Flux2Transformer2DModel

    with torch.device("meta"):
        transformer = Flux2Transformer2DModel(**TRANSFORMER_4B)
    return sum(p.numel() for p in transformer.parameters())


def build_full_pipeline(device: str, dtype: torch.dtype):
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from klein.generation.tiny import build_tokenizer

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = Flux2Transformer2DModel(**TRANSFORMER_4B)
            text_encoder = Qwen3ForCausalLM(Qwen3Config(**QWEN3_4B))
            vae = AutoencoderKLFlux2()
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(),
                              transformer=transformer, is_distilled=True)


def engine_for(pipe, name: str, device: str, dtype: torch.dtype, prompt_cache_mb: int):
    from klein.config import MODELS, Settings
    from klein.generation.engine import Engine
    from klein.generation.pipeline import LoadedModel, remember

    pipe.set_progress_bar_config(disable=True)
    key = (name, device, str(dtype))
    model = LoadedModel(pipe=pipe, spec=MODELS["flux2-klein-4b"], source="random weights", device=device,
                        dtype=dtype, key=key)
    remember(model)  # run_job finds models by key, as it does for loaded ones
    return Engine(model, Settings(prompt_cache_mb=prompt_cache_mb))


def time_variant(engine, size: int, runs: int, cached: bool) -> tuple[dict[str, float], float]:
    from klein.request import GenerationRequest

    request = GenerationRequest(prompt="a lighthouse on a cliff at dusk, volumetric light", seed=1,
                                width=size, height=size)
    started = time.perf_counter()
    engine.generate(request)  # warm-up (and compilation, when compiled)
    first_ms = (time.perf_counter() - started) * 1000
    results = []
    for _ in range(runs):
        if not cached:
            engine.prompt_cache.clear()
        results.append(engine.generate(request).timings_ms)
    return {stage: statistics.median(r[stage] for r in results) for stage in STAGES}, first_ms


def variants(smoke: bool) -> list[tuple[str, dict]]:
    if smoke:
        return [("eager", {}), ("fused qkv", {"fuse_qkv": True})]
    return [
        ("eager (native sdpa)", {}),
        ("fused qkv", {"fuse_qkv": True}),
        ("cudnn attention", {"attention_backend": "_native_cudnn"}),
        ("flash attention (native)", {"attention_backend": "_native_flash"}),
        ("compile", {"compile": True}),
        ("compile + fused qkv", {"compile": True, "fuse_qkv": True}),
    ]


def run_table(args) -> None:
    from klein.generation.pipeline import SpeedUps, apply_speed_ups
    from klein.generation.tiny import build_tiny_pipeline

    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    size = 256 if args.smoke else args.size
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke test, tiny architecture)"
    print(f"{name}; torch {torch.__version__}; {size}x{size}, 4 steps; median of {args.runs} runs (ms)\n")
    print("| variant | prompt cache | first call | " + " | ".join(STAGES) + " |")
    print("|---|---|---:|" + "---:|" * len(STAGES))
    for label, options in variants(args.smoke):
        pipe = build_tiny_pipeline().to(device) if args.smoke else build_full_pipeline(device, dtype)
        try:
            apply_speed_ups(pipe, SpeedUps(**options))
        except Exception as exc:  # a backend this machine lacks: say so and go on
            print(f"| {label} | — | not available: {str(exc)[:80]} |" + " |" * len(STAGES))
            continue
        engine = engine_for(pipe, label, device, dtype, prompt_cache_mb=1024)
        for cached in (False, True):
            medians, first = time_variant(engine, size, args.runs, cached)
            print(f"| {label} | {'hit' if cached else 'miss'} | {first:.0f} | "
                  + " | ".join(f"{medians[s]:.1f}" for s in STAGES) + " |")
        del engine, pipe
        if device == "cuda":
            torch.cuda.empty_cache()
    if device == "cuda":
        print(f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny architecture on the CPU, to test this harness")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    params = count_on_meta()
    print(f"flux2-klein-4b transformer on the meta device: {params / 1e9:.3f} B parameters "
          f"(expected about {EXPECTED_TRANSFORMER_PARAMS / 1e9:.2f} B)")
    if abs(params - EXPECTED_TRANSFORMER_PARAMS) / EXPECTED_TRANSFORMER_PARAMS > 0.01:
        print("parameter count is off: the architecture above does not match flux2-klein-4b")
        return 1
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU here: the timing tables need one (run `python -m bench.gpu` on a GPU machine)")
        return 0
    run_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
