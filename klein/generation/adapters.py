"""LoRA adapters on a loaded pipeline: loaded once and kept by name, stacked and switched per job.

`apply` runs inside the GPU lane, at the start of every job (job.run_job), so the adapters a job asked
for are the only ones active while it denoises, whoever ran before it. Switching between loaded adapters
is diffusers' `set_adapters` (no reload); a job without LoRAs disables them, so the transformer computes
exactly what the base model computes. Past `max_loaded` adapters the least recently used is deleted
(never one the job itself needs: a cap below a job's own count is exceeded until the next job).

The state lives beside the transformer it changes (`adapters_for`), so a ZeroGPU worker (a fork that
gets the job pickled) keeps its own consistent copy, as it keeps its own transformer.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import InvalidRequest
from .loras import ActiveLora

log = logging.getLogger(__name__)
DEFAULT_MAX_LOADED = 8


class LoadedAdapters:
    """The LoRA adapters loaded on one pipeline's transformer, least recently used first, with their bytes."""

    def __init__(self, max_loaded: int = DEFAULT_MAX_LOADED):
        self.max_loaded = max_loaded
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.loads = self.evictions = 0

    @property
    def names(self) -> list[str]:
        """Loaded adapter names, least recently used first."""
        return list(self._sizes)

    @property
    def size_bytes(self) -> int:
        """What the loaded adapters' weights hold, on the transformer's device."""
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._sizes)

    def apply(self, pipe, loras: tuple[ActiveLora, ...]) -> None:
        """Make exactly `loras` active, at their scales: load the missing ones (evicting the least recently
        used past `max_loaded`), then switch. No LoRAs: the adapters are disabled (the base model's pixels).
        Raises InvalidRequest naming `loras[i].path` when a file cannot be loaded on this model."""
        wanted = [lora.name for lora in loras]
        for name in wanted:
            if name in self._sizes:
                self._sizes.move_to_end(name)
        missing = [lora for lora in loras if lora.name not in self._sizes]
        self._evict(pipe, keep=set(wanted), room=len(missing))
        for lora in missing:
            self._load(pipe, lora)
        if loras:
            pipe.enable_lora()
            pipe.set_adapters(wanted, [lora.scale for lora in loras])
        elif _has_adapter_layers(pipe.transformer):
            pipe.disable_lora()

    def _evict(self, pipe, keep: set[str], room: int) -> None:
        while len(self._sizes) + room > self.max_loaded:
            victim = next((name for name in self._sizes if name not in keep), None)
            if victim is None:
                return
            _delete(pipe, victim)
            del self._sizes[victim]
            self.evictions += 1
            log.info("LoRA %s unloaded (least recently used of %d)", victim, self.max_loaded)

    def _load(self, pipe, lora: ActiveLora) -> None:
        file = Path(lora.file)
        field = f"{lora.field}.path"
        try:
            # Parameters, like the base weights: made outside inference mode so they stay ordinary tensors.
            with torch.inference_mode(False), torch.no_grad():
                pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=lora.name,
                                       use_safetensors=True, local_files_only=True)
        except Exception as exc:
            _delete(pipe, lora.name)
            log.warning("LoRA %s (%s) failed to load: %r", lora.label, file, exc)
            raise InvalidRequest(field, f"{lora.label!r} {_load_failure(exc)}") from None
        if lora.name not in (getattr(pipe.transformer, "peft_config", None) or {}):
            raise InvalidRequest(field, f"{lora.label!r} has no weights for this model's transformer (a LoRA for "
                                 "another model?); its format is not supported here")
        self._sizes[lora.name] = adapter_bytes(pipe.transformer, lora.name)
        self.loads += 1
        log.info("LoRA %s loaded as %s (%.1f MiB)", lora.label, lora.name, self._sizes[lora.name] / 2**20)


def _load_failure(exc: Exception) -> str:
    """Why a file did not load, for the user: no server paths, no traceback (the log has them)."""
    text = str(exc)
    if "size mismatch" in text or "shape" in text:
        return "does not fit this model: its weights have other shapes (a LoRA for another model?)"
    if "Target modules" in text or "not found in the base model" in text:
        return "targets layers this model does not have (a LoRA for another model, or --fuse-qkv is on)"
    if "We currently support LoRA" in text or "Invalid adapter" in text:
        return "is not a LoRA checkpoint diffusers can read; its format is not supported here"
    return f"could not be loaded ({type(exc).__name__}); the server log has the details"


def adapter_bytes(module: torch.nn.Module, name: str) -> int:
    """The bytes of one adapter's tensors in `module` (peft names them `...lora_A.<name>.weight`)."""
    marker = f".{name}."
    return sum(p.numel() * p.element_size() for n, p in module.named_parameters() if marker in n)


def text_encoder_adapters(pipe) -> tuple[tuple[str, float], ...]:
    """The adapters active on the text encoder, with their scales: () when there are none (FLUX.2's
    loader puts LoRAs on the transformer only). The prompt cache keys embeddings by it."""
    encoder = getattr(pipe, "text_encoder", None)
    if encoder is None or not getattr(encoder, "peft_config", None):
        return ()
    from peft.tuners.tuners_utils import BaseTunerLayer  # only once peft has put an adapter there

    for module in encoder.modules():
        if isinstance(module, BaseTunerLayer):
            if module.disable_adapters:
                return ()
            scaling = getattr(module, "scaling", {})
            return tuple((name, float(scaling.get(name, 1.0))) for name in module.active_adapters)
    return ()


def _has_adapter_layers(module: torch.nn.Module) -> bool:
    return bool(getattr(module, "peft_config", None))


def _delete(pipe, name: str) -> None:
    try:
        pipe.transformer.delete_adapters([name])
    except Exception:  # nothing of it was injected
        log.debug("LoRA %s: nothing to delete", name, exc_info=True)


_registry: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def adapters_for(pipe) -> LoadedAdapters:
    """The adapter state of `pipe`'s transformer, created on first use: one per transformer, since the
    adapters live there and pipelines made from the loaded one (inpainting) share it."""
    state = _registry.get(pipe.transformer)
    if state is None:
        state = _registry[pipe.transformer] = LoadedAdapters()
    return state
