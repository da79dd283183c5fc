"""GPU memory: what a model needs, which offload mode fits, and applying it.

Modes, fastest first:
- none: every component on the GPU (loaded straight there, no full copy in host RAM first);
- model: diffusers' model CPU offload: each component moves to the GPU while it runs, so the GPU holds
  the largest component plus activations;
- sequential: diffusers' leaf-level group offload: each layer moves to the GPU while it runs (the
  granularity of enable_sequential_cpu_offload, which fails on Qwen3's tied embeddings with accelerate
  1.15: a TypeError in its post_forward), so the GPU holds little more than the activations.

`auto` measures the model's weights from its configs on the meta device (no weights loaded) and
compares them with the free GPU memory at start-up.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import OFFLOAD_MODES as CONFIG_OFFLOAD_MODES

log = logging.getLogger(__name__)

GIB = 1024**3
OFFLOAD_MODES = tuple(mode for mode in CONFIG_OFFLOAD_MODES if mode != "auto")
# Room kept free beside the weights: the CUDA context, cuBLAS workspaces and the caching allocator's slack.
HEADROOM_BYTES = int(1.0 * GIB)


@dataclass(frozen=True)
class Need:
    """Bytes of weights per component, in the dtype the model runs in."""

    components: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def largest(self) -> int:
        return max(self.components.values(), default=0)


def activation_bytes(transformer_hidden: int, megapixels: float, vae_tiling: bool = False) -> int:
    """An estimate of the peak activations of one generation (bf16), not a measurement.

    The transformer's largest transient is a single-stream block's fused projection, tokens x 9 hidden
    (q, k, v and the SwiGLU's two halves of a 3x MLP), counted twice for what lives beside it; tokens are
    megapixels x 4096 image tokens plus 512 of text. The VAE decoder's last block runs at full
    resolution with 128 channels: about three such tensors at once; tiling bounds it to 1 MP tiles.
    """
    tokens = megapixels * 4096 + 512
    transformer = 2 * tokens * 9 * transformer_hidden * 2
    decode_megapixels = min(megapixels, 1.0) if vae_tiling else megapixels
    vae = 3 * decode_megapixels * 1e6 * 128 * 2
    return int(max(transformer, vae))


def choose_offload(free_bytes: int, need: Need, activations: int) -> tuple[str, str]:
    """The fastest mode whose resident weights plus activations fit in `free_bytes`, and why."""
    budget = free_bytes - HEADROOM_BYTES - activations
    gib = lambda n: f"{n / GIB:.1f} GiB"  # noqa: E731
    if need.total <= budget:
        return "none", f"weights {gib(need.total)} + activations fit in {gib(free_bytes)} free"
    if need.largest <= budget:
        return "model", (f"weights {gib(need.total)} do not fit in {gib(free_bytes)} free with activations; "
                         f"the largest component ({gib(need.largest)}) does")
    return "sequential", (f"not even the largest component ({gib(need.largest)}) fits beside the activations "
                          f"in {gib(free_bytes)} free")


def measure_need(source: str, dtype: torch.dtype) -> Need:
    """Each component's weight bytes, from its config instantiated on the meta device (no weights read)."""
    index = _read_json(source, "model_index.json")
    components = {}
    for name, entry in index.items():
        if not isinstance(entry, list) or len(entry) != 2 or entry[0] not in ("diffusers", "transformers"):
            continue
        module = _meta_module(source, name, *entry)
        if module is not None:
            components[name] = parameter_count(module) * torch.finfo(dtype).bits // 8
    return Need(components)


def parameter_count(module: torch.nn.Module) -> int:
    """Parameters, each counted once (tied weights such as Qwen3-4B's embeddings are one tensor)."""
    return sum(p.numel() for p in module.parameters())


def apply_offload(pipe, mode: str, device: str) -> None:
    """Put the pipeline (loaded on the CPU) in `mode` for `device`."""
    if mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=device.startswith("cuda"))
    elif mode != "none":
        raise ValueError(f"offload: {mode!r} is not one of {', '.join(OFFLOAD_MODES)}")


def free_gpu_bytes(device: str) -> int | None:
    """Free memory on a CUDA device now; None elsewhere (there is nothing to offload to)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return free


def _meta_module(source: str, name: str, library: str, class_name: str) -> torch.nn.Module | None:
    import diffusers
    import transformers

    cls = getattr(diffusers if library == "diffusers" else transformers, class_name, None)
    if cls is None or not issubclass(cls, torch.nn.Module):
        return None  # the scheduler, the tokenizer
    with torch.device("meta"):
        if library == "diffusers":
            return cls.from_config(cls.load_config(source, subfolder=name))
        config = transformers.AutoConfig.from_pretrained(source, subfolder=name)
        return cls(config)


def _read_json(source: str, filename: str) -> dict:
    path = Path(source) / filename
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, filename))
    return json.loads(path.read_text())
