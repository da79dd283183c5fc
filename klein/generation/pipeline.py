"""Load and cache the diffusers Flux2KleinPipeline: a model-table name, a hub id, a local folder
or the tiny model. Loaded once per (model, device, dtype) and reused for every request."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import Flux2KleinPipeline

from ..config import MODELS, TINY, TINY_MODELS, ModelSpec, on_zero_gpu
from ..errors import ModelLoadError
from . import tiny
from .memory import activation_bytes, apply_offload, choose_offload, free_gpu_bytes, measure_need
from .prompt_cache import PromptCache

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class LoadedModel:
    """A ready pipeline and what the engine needs to know about it."""

    pipe: Flux2KleinPipeline
    spec: ModelSpec
    source: str
    device: str
    dtype: torch.dtype

    key: tuple[str, ...]  # (model, device, dtype, offload mode)
    offload: str = "none"
    offload_reason: str = ""
    # Owned by the model, not by an engine: embeddings belong to this text encoder, and a ZeroGPU
    # worker (a fork) finds them through cached_model(key). The engine sets its size.
    prompt_cache: PromptCache = field(default_factory=lambda: PromptCache(0))

    @property
    def cache_device(self) -> str:
        """Where cached prompt embeddings live: beside the model, or in host memory when it offloads."""
        return self.device if self.offload == "none" else "cpu"

    @property
    def is_tiny(self) -> bool:
        return self.spec.name in TINY_MODELS


_cache: dict[tuple[str, ...], LoadedModel] = {}
_cache_lock = threading.Lock()


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str) -> str:
    return "bf16" if device.startswith("cuda") else "fp32"


@dataclass(frozen=True)
class SpeedUps:
    """Optional GPU speed-ups, applied once at load time."""

    compile: bool = False
    fuse_qkv: bool = False
    attention_backend: str | None = None


def load_model(
    model: str,
    cache_dir: Path,
    device: str | None = None,
    dtype: str | None = None,
    speed_ups: SpeedUps = SpeedUps(),
    offload: str = "none",
    vae_tiling: bool = False,
) -> LoadedModel:
    """Load `model` (cached) in memory mode `offload` (`auto` picks one: memory.py). Raises
    ModelLoadError naming the model and the cause."""
    device = device or default_device()
    check_device(device)
    dtype = dtype or default_dtype(device)
    if dtype == "fp16":
        log.warning("--dtype fp16: FLUX.2 [klein] is trained in bf16; fp16's narrower range can overflow "
                    "(NaNs, black images). Use bf16 unless this GPU lacks it.")
    with _cache_lock:
        source = _source_for(model, Path(cache_dir))
        try:  # `auto` resolved first, so a model it resolves to is found in the cache as asked for by name
            offload, reason = resolve_offload(offload, source, device, DTYPES[dtype])
        except Exception as exc:
            raise _load_error(model, source, device, exc) from exc
        key = (model, device, dtype, offload)
        if key not in _cache:
            loaded = _load(model, source, device, dtype, offload, reason)
            if vae_tiling or loaded.offload != "none":  # memory is short: decode 2k images in tiles too
                loaded.pipe.vae.enable_tiling()
            apply_speed_ups(loaded.pipe, speed_ups)
            _cache[key] = loaded
        return _cache[key]


def check_device(device: str) -> None:
    """Refuse, before anything loads, a device torch cannot use here, naming the flag to change."""
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        built = "built without CUDA" if torch.version.cuda is None else "no CUDA GPU visible"
        raise ModelLoadError(f"--device {device}: torch {torch.__version__} sees no CUDA GPU here ({built}); "
                             "leave --device out to use the best device found, or pass --device cpu.")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError(f"--device {device}: this machine has no Apple GPU (MPS) for torch; "
                             "leave --device out to use the best device found.")


def apply_speed_ups(pipe: Flux2KleinPipeline, speed_ups: SpeedUps) -> None:
    """Fuse projections, pick the attention backend and compile, in that order (compile sees the result)."""
    transformer = pipe.transformer
    if speed_ups.fuse_qkv:
        transformer.fuse_qkv_projections()
    transformer.klein_fused_qkv = speed_ups.fuse_qkv  # read per LoRA request (loras.check_unfused)
    if speed_ups.attention_backend:
        try:
            transformer.set_attention_backend(speed_ups.attention_backend)
        except Exception as exc:
            raise ModelLoadError(
                f"attention_backend: {speed_ups.attention_backend!r} cannot be used here ({_shorten(str(exc))})"
            ) from exc
    if speed_ups.compile:
        # Compiling the repeated blocks compiles once per block type, not once per model: minutes less.
        transformer.compile_repeated_blocks(fullgraph=True, dynamic=True)


def remember(model: LoadedModel) -> None:
    """Keep a model built elsewhere (bench/gpu.py's random-weight 4B) where run_job finds it, by its key."""
    with _cache_lock:
        _cache[model.key] = model


def cached_model(key: tuple[str, ...]) -> LoadedModel:
    """The model loaded under `key` (how the GPU worker finds it without pickling it)."""
    return _cache[key]


def _load(model: str, source: str, device: str, dtype: str, offload: str, reason: str) -> LoadedModel:
    log.info("loading model %s from %s on %s (%s), offload %s: %s", model, source, device, dtype, offload, reason)
    try:
        if offload == "none":
            pipe = _load_onto(source, DTYPES[dtype], device)
        else:
            pipe = Flux2KleinPipeline.from_pretrained(source, dtype=DTYPES[dtype])
            apply_offload(pipe, offload, device)
    except Exception as exc:
        raise _load_error(model, source, device, exc) from exc
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(
        pipe=pipe, spec=_spec_for(model, pipe), source=source, device=device, dtype=DTYPES[dtype],
        key=(model, device, dtype, offload), offload=offload, offload_reason=reason,
    )


def _load_error(model: str, source: str, device: str, exc: Exception) -> ModelLoadError:
    advice = ("Check --cache-dir (the tiny model is saved there)" if model in TINY_MODELS else
              "Check --model, your network and Hugging Face access (gated models need `hf auth login`), "
              "or run with --model tiny to try the app without downloading weights")
    return ModelLoadError(f"Could not load model {model!r} ({source}) on {device}: {first_line(exc)} {advice}.")


def resolve_offload(requested: str, source: str, device: str, dtype: torch.dtype) -> tuple[str, str]:
    """The memory mode to use and why: `auto` takes the fastest that fits this GPU's free memory."""
    if requested != "auto":
        return requested, f"requested with --offload {requested}"
    free = free_gpu_bytes(device)
    if free is None:
        return "none", f"auto: {device} has no GPU memory to save"
    need = measure_need(source, dtype)
    hidden = _transformer_hidden(source)
    return choose_offload(free, need, activation_bytes(hidden, megapixels=4.0, vae_tiling=True))


def _transformer_hidden(source: str) -> int:
    from diffusers import Flux2Transformer2DModel

    config = Flux2Transformer2DModel.load_config(source, subfolder="transformer")
    return config["num_attention_heads"] * config["attention_head_dim"]


def _load_onto(source: str, dtype: torch.dtype, device: str) -> Flux2KleinPipeline:
    """Load straight onto the device where diffusers can (each weight read once, into its place), not
    into host RAM first and copied over."""
    if device in ("cpu", "cuda", "mps") and not on_zero_gpu():  # ZeroGPU attaches CUDA per call: .to() there
        try:
            return Flux2KleinPipeline.from_pretrained(source, dtype=dtype, device_map=device)
        except ValueError as exc:  # a device_map this diffusers does not offer here
            log.info("loading through host memory: %s", first_line(exc))
    return Flux2KleinPipeline.from_pretrained(source, dtype=dtype).to(device)


def first_line(exc: BaseException) -> str:
    """`Type: the first line of its message`, shortened: enough for a one-line start-up error."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {_shorten(text.splitlines()[0] if text else type(exc).__name__)}"


def _shorten(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _source_for(model: str, cache_dir: Path) -> str:
    if model in TINY_MODELS:
        return str(tiny.ensure_tiny_saved(cache_dir, distilled=model == TINY))
    if model in MODELS:
        return MODELS[model].hub_id
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"Could not load model {model!r}: the folder has no model_index.json (save it with "
                "save_pretrained), or run with --model tiny."
            )
        return str(path.resolve())
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"Could not load model {model!r}: it is not a model name ({', '.join(MODELS)}), "
            "an existing folder, or a hub id like owner/name. Run with --model tiny to try the app."
        )
    return model


def _spec_for(model: str, pipe: Flux2KleinPipeline) -> ModelSpec:
    """The model table's row; for a hub id or folder, one built from the pipeline's own is_distilled."""
    if model in MODELS:
        return MODELS[model]
    distilled = bool(pipe.config.get("is_distilled", False))
    return ModelSpec(name=model, hub_id=model, distilled=distilled, licence="see the model card")
