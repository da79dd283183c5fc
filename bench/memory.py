"""GPU memory of each FLUX.2 [klein] model and offload mode: the README's memory table.

    python -m bench.memory

Weights are counted on the meta device from the published configs below, through the app's own
measure_need (klein/generation/memory.py), so no weights are downloaded. Activations are the app's
estimate (memory.activation_bytes), not a measurement: no GPU was at hand when the table was made.
Which mode a GPU runs is what `--offload auto` would pick with that much free memory.

Config sources (the hub's files are not reachable from the machine that made the table):
- transformer: diffusers scripts/convert_flux2_to_diffusers.py (klein-4b, klein-9b), matching the
  converted klein-base-4B transformer/config.json; base and distilled share an architecture.
- text encoders: Qwen3-4B (tied embeddings) and Qwen3-8B (untied), as in the klein repos' text_encoder.
- VAE: AutoencoderKLFlux2 with its defaults, which are the published vae/config.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

TRANSFORMER = {
    "4b": dict(num_layers=5, num_single_layers=20, num_attention_heads=24, joint_attention_dim=7680),
    "9b": dict(num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=12288),
}
TRANSFORMER_SHARED = dict(_class_name="Flux2Transformer2DModel", patch_size=1, in_channels=128, attention_head_dim=128,
                          timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=[32, 32, 32, 32],
                          rope_theta=2000, eps=1e-6, guidance_embeds=False)
QWEN3 = {
    "4b": dict(hidden_size=2560, intermediate_size=9728, tie_word_embeddings=True),
    "9b": dict(hidden_size=4096, intermediate_size=12288, tie_word_embeddings=False),
}
QWEN3_SHARED = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], vocab_size=151936, num_hidden_layers=36,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                    rope_theta=1000000, rms_norm_eps=1e-6)
MODELS = {"flux2-klein-4b / base-4b": "4b", "flux2-klein-9b / base-9b": "9b"}
GPU_SIZES_GB = (12, 16, 24, 48, 80)
IN_USE_GIB = 0.5  # what the driver and the CUDA context take before the app loads anything


def write_configs(folder: Path, size: str) -> None:
    """A model folder with the published configs and no weights."""
    index = {"_class_name": "Flux2KleinPipeline", "is_distilled": True,
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "text_encoder": ["transformers", "Qwen3ForCausalLM"], "tokenizer": ["transformers", "Qwen2TokenizerFast"],
             "transformer": ["diffusers", "Flux2Transformer2DModel"], "vae": ["diffusers", "AutoencoderKLFlux2"]}
    configs = {
        "transformer": {**TRANSFORMER_SHARED, **TRANSFORMER[size]},
        "text_encoder": {**QWEN3_SHARED, **QWEN3[size]},
        "vae": {"_class_name": "AutoencoderKLFlux2"},  # every published value is the class default
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    for name, config in configs.items():
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(json.dumps(config))


def rows() -> list[list[str]]:
    from klein.generation.memory import GIB, activation_bytes, choose_offload, measure_need

    table = []
    for label, size in MODELS.items():
        with tempfile.TemporaryDirectory() as folder:
            write_configs(Path(folder), size)
            need = measure_need(folder, torch.bfloat16)
        hidden = TRANSFORMER[size]["num_attention_heads"] * TRANSFORMER_SHARED["attention_head_dim"]
        act = {mp: activation_bytes(hidden, mp) for mp in (1.0, 4.0)}
        act_tiled = activation_bytes(hidden, 4.0, vae_tiling=True)
        modes = [choose_offload(int((gb - IN_USE_GIB) * GIB), need, act_tiled)[0] for gb in GPU_SIZES_GB]
        gib = lambda n: f"{n / GIB:.1f}"  # noqa: E731
        parts = [gib(need.components[name]) for name in ("transformer", "text_encoder", "vae")]
        table.append([label, *parts, gib(need.total), gib(act[1.0]), f"{gib(act[4.0])} ({gib(act_tiled)})", *modes])
    return table


def main() -> int:
    header = ["model", "transformer GiB", "text encoder GiB", "VAE GiB", "weights GiB (bf16)", "activations 1k GiB",
              "activations 2k GiB (tiled VAE)", *(f"{gb} GB GPU" for gb in GPU_SIZES_GB)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows():
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
