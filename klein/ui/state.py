"""The UI's state and input conversions that need no Gradio (pure): the settings' names, cancel flags,
history entries, settings to restore, slider and gallery values."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import presets
from ..config import Limits
from ..errors import InvalidRequest
from ..output.encode import settings_from_image
from ..presets import GUIDANCE, OUTPUT_FORMATS, SAFETY_TOLERANCE, STEPS
from ..request import GenerationRequest

HISTORY_LIMIT = 48


# The settings every workflow endpoint takes after its reference image(s), in API order. The endpoint
# signatures (endpoints.py) and the tab's controls (controls.TabControls) are both built from it.
SETTING_NAMES = ("prompt", "aspect_ratio", "resolution", "seed", "randomize_seed", "output_format", "custom_size",
                 "width", "height", "steps", "guidance", "loras", "enhance_prompt", "safety_tolerance")
# Inpainting's output has its image's size: it takes no size settings, and a strength.
SIZE_NAMES = ("aspect_ratio", "resolution", "custom_size", "width", "height")
INPAINT_SETTING_NAMES = ("prompt", "strength", *(n for n in SETTING_NAMES if n not in SIZE_NAMES and n != "prompt"))


class Cancellations:
    """One cancel flag per browser session, so Cancel stops that visitor's running generation."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        with self._lock:
            event = self._events[session] = threading.Event()
            return event

    def cancel(self, session: str) -> None:
        with self._lock:
            if session in self._events:
                self._events[session].set()

    def finish(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]


def request_from_controls(references: Sequence[Any], prompt: str, aspect_ratio: str = presets.MATCH_INPUT,
                          resolution: str = "1k", seed: Any = None, randomize_seed: bool = False,
                          output_format: str = presets.DEFAULT_OUTPUT_FORMAT, custom_size: bool | None = False,
                          width: Any = None, height: Any = None, steps: Any = None, guidance: Any = None,
                          safety_tolerance: Any = presets.DEFAULT_SAFETY_TOLERANCE, loras: Any = None,
                          enhance_prompt: bool | None = False, mask: Any = None, strength: Any = None,
                          num_images: Any = 1, *, distilled: bool, limits: Limits) -> GenerationRequest:
    """The request a tab's control values describe (validated by GenerationRequest, naming the field).

    custom_size None (an API call that leaves it out) means a custom size when width or height is given.
    The size settings default to the input's (inpainting takes none).
    """
    if custom_size is None:
        custom_size = width is not None or height is not None
    return GenerationRequest(
        prompt=prompt,
        images=tuple(references),
        aspect_ratio=aspect_ratio,
        resolution=resolution,
        seed=seed_from(seed, randomize_seed),
        width=custom_side("width", width) if custom_size else None,
        height=custom_side("height", height) if custom_size else None,
        steps=whole_number(steps),
        guidance=float(guidance) if guidance is not None and not distilled else None,  # distilled: ignored
        output_format=output_format,
        safety_tolerance=whole_number(safety_tolerance),
        loras=() if loras is None else loras,
        enhance_prompt=False if enhance_prompt is None else enhance_prompt,
        mask=mask,
        strength=presets.STRENGTH.default if strength is None else strength,
        num_images=1 if num_images is None else whole_number(num_images),
        limits=limits,
    )


def seed_from(seed: float | int | None, randomize_seed: bool) -> int | None:
    """None (random) when randomize_seed is on or no seed is given, else the seed as an int (validated by
    the request): a seed given is the seed used."""
    if randomize_seed or seed is None:
        return None
    if isinstance(seed, float) and not seed.is_integer():
        raise InvalidRequest("seed", f"{seed!r} is not a whole number; use an integer in 0..{presets.SEED_MAX}")
    return int(seed)


def whole_number(value: Any) -> Any:
    """Sliders send floats: a whole one becomes an int, anything else is left for the request to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def custom_side(name: str, value: Any) -> Any:
    """A custom width or height from a slider; missing is refused here, anything else by the request."""
    if value is None:
        raise InvalidRequest(name, "is missing; a custom size needs both width and height")
    return whole_number(value)


def gallery_paths(images: Sequence[Any] | None) -> list[Any]:
    """Gallery values arrive as (path, caption) pairs; keep the paths."""
    return [item[0] if isinstance(item, (tuple, list)) else item for item in images or []]


def settings_to_restore(settings: dict[str, Any], with_match_input: bool, max_steps: int,
                        max_tolerance: int) -> dict[str, Any]:
    """Control name -> value for the recorded settings a tab can take.

    Values a control would refuse are made to fit (sizes aligned to 16 and clamped, the tolerance
    capped) or skipped (steps or guidance outside this model's range, e.g. from an A1111 image),
    so the restored settings always generate.
    """
    values: dict[str, Any] = {"prompt": settings.get("prompt", ""), "randomize_seed": False}
    choices = [*([presets.MATCH_INPUT] if with_match_input else []), *presets.ASPECT_PRESETS]
    allowed = {"aspect_ratio": choices, "resolution": presets.RESOLUTIONS, "output_format": OUTPUT_FORMATS}
    for name, options in allowed.items():
        if settings.get(name) in options:
            values[name] = settings[name]
    width, height = _number(settings.get("width")), _number(settings.get("height"))
    if settings.get("custom_size", "aspect_ratio" not in settings) and width and height:
        values.update(custom_size=True, width=_fit_side(width), height=_fit_side(height))
    ranges = {"seed": (0, presets.SEED_MAX), "steps": (STEPS.minimum, max_steps),
              "guidance": (GUIDANCE.minimum, GUIDANCE.maximum)}
    for name, (low, high) in ranges.items():
        value = _number(settings.get(name))
        if value is not None and low <= value <= high:
            values[name] = int(value) if name != "guidance" else value
    tolerance = _number(settings.get("safety_tolerance"))
    if tolerance is not None and SAFETY_TOLERANCE.minimum <= tolerance <= SAFETY_TOLERANCE.maximum:
        values["safety_tolerance"] = min(int(tolerance), max_tolerance)
    strength = _number(settings.get("strength"))
    if strength is not None and presets.STRENGTH.minimum <= strength <= presets.STRENGTH.maximum:
        values["strength"] = strength
    values["enhance_prompt"] = settings.get("enhance_prompt") is True
    return values


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _fit_side(value: float) -> int:
    return min(presets.MAX_SIDE, max(presets.MIN_SIDE, presets.align(value)))


def with_history_entries(entries: list[dict], paths: Sequence[str], references: Sequence[str] = ()) -> list[dict]:
    """The history with a batch's images first, in seed order (each its own entry, restoring its own seed)."""
    for path in reversed(paths):
        entries = with_history_entry(entries, path, references)
    return entries


def with_history_entry(entries: list[dict], path: str | None, references: Sequence[str] = ()) -> list[dict]:
    """The history with the image at `path` first (its settings read from its metadata, with the files of
    its reference images so restoring it restores them), capped."""
    settings = settings_from_image(path) if path else None
    if settings is None:
        return entries
    output_format = {".jpg": "jpeg", ".png": "png", ".webp": "webp"}.get(Path(path).suffix)
    entry = {**settings, "path": path, "output_format": output_format, "references": list(references),
             "caption": f"{settings.get('seed')} · {settings.get('prompt', '')[:60]}"}
    return [entry, *entries][:HISTORY_LIMIT]


def batch_caption(seed: int) -> str:
    """A batch image's caption in the page's gallery and the API's: its seed."""
    return f"seed {seed}"


def select_from_batch(images: Sequence[Any] | None, details: dict | None, index: int) -> tuple[Any, Any, dict | None]:
    """(file, seed, fields) of a batch's image `index`, to make it the current result: the batch's fields
    with that image's seed (every image of a batch shares the rest)."""
    paths = gallery_paths(images)
    seeds = (details or {}).get("seeds") or []
    if not 0 <= index < min(len(paths), len(seeds)):
        return None, None, details
    return paths[index], seeds[index], {**details, "seed": seeds[index]}
