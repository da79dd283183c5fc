"""The UI's state and input conversions that need no Gradio (pure): a tab's controls, cancel flags,
history entries, settings to restore, slider and gallery values, the MCP gallery schema."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import presets
from .encode import settings_from_image
from .errors import InvalidRequest
from .config import Limits
from .request import MAX_SAFETY_TOLERANCE, OUTPUT_FORMATS, GenerationRequest

HISTORY_LIMIT = 48


@dataclass
class TabControls:
    """The components of one workflow tab."""

    workflow: str
    reference: Any
    prompt: Any
    aspect_ratio: Any
    resolution: Any
    seed: Any
    randomize_seed: Any
    output_format: Any
    custom_size: Any
    width: Any
    height: Any
    steps: Any
    guidance: Any
    safety_tolerance: Any
    generate: Any
    cancel: Any
    result: Any
    seed_used: Any
    reuse_seed: Any
    to_edit: Any
    to_multi: Any
    info: Any

    def inputs(self) -> list:
        """The endpoint's inputs, in the order of its API parameters."""
        settings = [self.prompt, self.aspect_ratio, self.resolution, self.seed, self.randomize_seed,
                    self.output_format, self.custom_size, self.width, self.height, self.steps, self.guidance,
                    self.safety_tolerance]
        return ([self.reference] if self.reference is not None else []) + settings

    def restorable(self) -> list:
        return self.inputs()[1:] if self.reference is not None else self.inputs()


def restore_updates(tab: TabControls, settings: dict[str, Any]) -> dict:
    """Fill a tab's controls from recorded settings (history entry or image metadata)."""
    values = settings_to_restore(settings, with_match_input=tab.reference is not None,
                                 max_steps=int(tab.steps.maximum), max_tolerance=int(tab.safety_tolerance.maximum))
    return {getattr(tab, name): value for name, value in values.items()}


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


def request_from_controls(references: Sequence[Any], prompt: str, aspect_ratio: str, resolution: str, seed: Any,
                          randomize_seed: bool, output_format: str, custom_size: bool, width: Any, height: Any,
                          steps: Any, guidance: Any, safety_tolerance: Any, *, distilled: bool,
                          limits: Limits) -> GenerationRequest:
    """The request a tab's control values describe (validated by GenerationRequest, naming the field)."""
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
        limits=limits,
    )


def seed_from(seed: float | int | None, randomize_seed: bool) -> int | None:
    """None (random) when randomize_seed is on, else the seed as an int (validated by the request)."""
    if randomize_seed:
        return None
    if seed is None or (isinstance(seed, float) and not seed.is_integer()):
        raise InvalidRequest("seed", f"must be a whole number in 0..{presets.SEED_MAX}, got {seed!r}")
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
    limits = Limits()
    ranges = {"seed": (0, presets.SEED_MAX), "steps": (limits.min_steps, max_steps),
              "guidance": (limits.min_guidance, limits.max_guidance)}
    for name, (low, high) in ranges.items():
        value = _number(settings.get(name))
        if value is not None and low <= value <= high:
            values[name] = int(value) if name != "guidance" else value
    tolerance = _number(settings.get("safety_tolerance"))
    if tolerance is not None and 0 <= tolerance <= MAX_SAFETY_TOLERANCE:
        values["safety_tolerance"] = min(int(tolerance), max_tolerance)
    return values


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _fit_side(value: float) -> int:
    return min(presets.MAX_SIDE, max(presets.MIN_SIDE, presets.align(value)))


def with_history_entry(entries: list[dict], path: str | None) -> list[dict]:
    """The history with the image at `path` first (its settings read from its metadata), capped."""
    settings = settings_from_image(path) if path else None
    if settings is None:
        return entries
    output_format = {".jpg": "jpeg", ".png": "png", ".webp": "webp"}.get(Path(path).suffix)
    entry = {**settings, "path": path, "output_format": output_format,
             "caption": f"{settings.get('seed')} · {settings.get('prompt', '')[:60]}"}
    return [entry, *entries][:HISTORY_LIMIT]


# What Gradio's MCP server tells clients a file parameter takes; it turns such strings into uploads.
MCP_FILE_FORMAT = "Gradio File Input - a http or https url to a file"
MCP_MAX_GALLERY_ITEMS = 64


def mcp_gallery_schema(schema: dict[str, Any], file_positions: list[list[Any]]) -> tuple[dict, list[list[Any]]]:
    """An MCP tool's input schema with each Gallery parameter as a plain list of {"image": url}.

    Gradio 6.31 nests a Gallery's `$defs` inside its property while the `$ref`s point at the root,
    so MCP clients' schema validation fails, and the file positions it records are schema paths
    that never match a value. Each item here is {"image": an http(s) URL or a data URI}, the shape
    gradio_client sends, with one file position per item.
    """
    properties = dict(schema.get("properties", {}))
    for name, prop in properties.items():
        if "GalleryImage" not in prop.get("$defs", {}):
            continue
        image = {"type": "string", "format": MCP_FILE_FORMAT,
                 "description": "the image: an http(s) URL or a data URI (data:image/png;base64,...)"}
        properties[name] = {"type": "array", "description": prop.get("description", ""),
                            "items": {"type": "object", "properties": {"image": image}, "required": ["image"]}}
        file_positions = [p for p in file_positions if p[:1] != [name]]
        file_positions += [[name, index, "image"] for index in range(MCP_MAX_GALLERY_ITEMS)]
    return {**schema, "properties": properties}, file_positions
