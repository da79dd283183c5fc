"""The UI's state and input conversions that need no Gradio (pure): cancel flags, history entries,
settings to restore, slider and gallery values."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import presets
from .encode import settings_from_image
from .errors import InvalidRequest
from .request import OUTPUT_FORMATS

HISTORY_LIMIT = 48


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


def gallery_paths(images: Sequence[Any] | None) -> list[Any]:
    """Gallery values arrive as (path, caption) pairs; keep the paths."""
    return [item[0] if isinstance(item, (tuple, list)) else item for item in images or []]


def settings_to_restore(settings: dict[str, Any], with_match_input: bool) -> dict[str, Any]:
    """Control name -> value for the recorded settings a tab can take (unknown values are skipped)."""
    values: dict[str, Any] = {"prompt": settings.get("prompt", ""), "randomize_seed": False}
    choices = [*([presets.MATCH_INPUT] if with_match_input else []), *presets.ASPECT_PRESETS]
    allowed = {"aspect_ratio": choices, "resolution": presets.RESOLUTIONS, "output_format": OUTPUT_FORMATS}
    for name, options in allowed.items():
        if settings.get(name) in options:
            values[name] = settings[name]
    custom = settings.get("custom_size", "aspect_ratio" not in settings)
    if custom and "width" in settings and "height" in settings:
        values.update(custom_size=True, width=settings["width"], height=settings["height"])
    for name in ("seed", "steps", "guidance", "safety_tolerance"):
        if name in settings:
            values[name] = settings[name]
    return values


def with_history_entry(entries: list[dict], path: str | None) -> list[dict]:
    """The history with the image at `path` first (its settings read from its metadata), capped."""
    settings = settings_from_image(path) if path else None
    if settings is None:
        return entries
    output_format = {".jpg": "jpeg", ".png": "png", ".webp": "webp"}.get(Path(path).suffix)
    entry = {**settings, "path": path, "output_format": output_format,
             "caption": f"{settings.get('seed')} · {settings.get('prompt', '')[:60]}"}
    return [entry, *entries][:HISTORY_LIMIT]
