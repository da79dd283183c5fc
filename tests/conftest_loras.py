"""Helpers for the LoRA tests: real adapters for the tiny transformer, built with peft and saved in the
formats users bring (diffusers and kohya), broken files, and an engine with a pipeline of its own so
the adapters it loads never reach the session's shared tiny model.

Imported by tests/test_loras*.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from klein.config import Settings
from klein.generation.engine import Engine
from klein.generation.pipeline import LoadedModel, remember
from klein.request import GenerationRequest

RANK = 4
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the double block's image attention projections
B_GAIN = 8.0  # peft's non-zero init is small next to the tiny model's weights: make each adapter visible


def lora_state_dict(tiny_dir: Path, seed: int) -> dict[str, torch.Tensor]:
    """A rank-4 LoRA on the tiny transformer's attention projections, B non-zero so it changes outputs
    (peft names: `transformer_blocks.0.attn.to_q.lora_A.weight`, ...)."""
    config = Flux2Transformer2DModel.load_config(str(Path(tiny_dir) / "transformer"))
    transformer = Flux2Transformer2DModel.from_config(config)
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TARGETS, init_lora_weights=False))
    state = get_peft_model_state_dict(transformer)
    return {k: (v * B_GAIN if ".lora_B." in k else v).detach().clone() for k, v in state.items()}


def save_diffusers(state: dict[str, torch.Tensor], folder: Path, name: str) -> Path:
    """The file diffusers' save_lora_weights writes (keys `transformer.…lora_A.weight`, adapter metadata)."""
    metadata = {"r": RANK, "lora_alpha": RANK, "target_modules": TARGETS}
    Flux2KleinPipeline.save_lora_weights(folder, transformer_lora_layers=state, weight_name=name,
                                         transformer_lora_adapter_metadata=metadata)
    return folder / name


def save_kohya(state: dict[str, torch.Tensor], path: Path) -> Path:
    """The same adapter in kohya's FLUX.2 keys: `lora_unet_double_blocks_0_img_attn_qkv` holds q, k and v
    as one block-diagonal LoRA (diffusers splits it back exactly), alpha = rank (scale 1)."""
    prefix = "transformer_blocks.0.attn."
    down = {n: state[f"{prefix}{n}.lora_A.weight"] for n in ("to_q", "to_k", "to_v", "to_out.0")}
    up = {n: state[f"{prefix}{n}.lora_B.weight"] for n in down}
    qkv = "lora_unet_double_blocks_0_img_attn_qkv"
    proj = "lora_unet_double_blocks_0_img_attn_proj"
    tensors = {
        f"{qkv}.lora_down.weight": torch.cat([down["to_q"], down["to_k"], down["to_v"]]),
        f"{qkv}.lora_up.weight": torch.block_diag(up["to_q"], up["to_k"], up["to_v"]),
        f"{qkv}.alpha": torch.tensor(3.0 * RANK),
        f"{proj}.lora_down.weight": down["to_out.0"],
        f"{proj}.lora_up.weight": up["to_out.0"],
        f"{proj}.alpha": torch.tensor(float(RANK)),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def save_ai_toolkit(state: dict[str, torch.Tensor], path: Path) -> Path:
    """The same adapter as ai-toolkit (and fal's trainer) write it: BFL block names under `diffusion_model.`,
    q, k and v as one LoRA on the fused qkv projection (A shared, B stacked: block-diagonal here)."""
    prefix = "transformer_blocks.0.attn."
    down = [state[f"{prefix}{n}.lora_A.weight"] for n in ("to_q", "to_k", "to_v")]
    up = [torch.cat([state[f"{prefix}{n}.lora_B.weight"] if j == i else torch.zeros(32, RANK) for j in range(3)], 1)
          for i, n in enumerate(("to_q", "to_k", "to_v"))]
    block = "diffusion_model.double_blocks.0.img_attn."
    tensors = {f"{block}qkv.lora_A.weight": torch.cat(down), f"{block}qkv.lora_B.weight": torch.cat(up),
               f"{block}proj.lora_A.weight": state[f"{prefix}to_out.0.lora_A.weight"],
               f"{block}proj.lora_B.weight": state[f"{prefix}to_out.0.lora_B.weight"]}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def save_lokr(path: Path) -> Path:
    """A LyCORIS LoKr file for the same layers (Kronecker factors instead of A/B)."""
    save_file({"lycoris_transformer_blocks_0_attn_to_q.lokr_w1": torch.randn(4, 4),
               "lycoris_transformer_blocks_0_attn_to_q.lokr_w2": torch.randn(8, 8),
               "lycoris_transformer_blocks_0_attn_to_q.alpha": torch.tensor(4.0)}, str(path))
    return path


def save_wrong_shapes(path: Path) -> Path:
    """A diffusers-format LoRA made for a wider model: its A matrices do not fit the tiny projections."""
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(RANK, 64),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(32, RANK)}, str(path))
    return path


def save_truncated(path: Path) -> Path:
    """A safetensors header promising more bytes than the file has (an interrupted download)."""
    header = json.dumps({"x.lora_A.weight": {"dtype": "F32", "shape": [4, 32], "data_offsets": [0, 512]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)
    return path


def lora_engine(tiny_model: LoadedModel, tmp: Path, lora_dir: Path, key: str, max_loaded: int = 8) -> Engine:
    """An engine over its own copy of the saved tiny pipeline (the real from_pretrained path), remembered
    under its own key so run_job finds it and no other test sees its adapters."""
    pipe = Flux2KleinPipeline.from_pretrained(tiny_model.source, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    model = LoadedModel(pipe=pipe, spec=tiny_model.spec, source=tiny_model.source, device="cpu",
                        dtype=torch.float32, key=(key, "cpu", "fp32"))
    remember(model)
    settings = Settings(model="tiny", cache_dir=tmp, output_dir=tmp / "out", lora_dir=lora_dir,
                        max_loras_cached=max_loaded)
    return Engine(model, settings, "test")


def pixels(engine: Engine, loras=(), seed: int = 11, prompt: str = "a red fox", **kwargs) -> np.ndarray:
    """The decoded image of one small generation."""
    request = GenerationRequest(prompt=prompt, width=64, height=64, seed=seed, loras=loras, **kwargs)
    return np.asarray(engine.generate(request, keep_file=False).image)
