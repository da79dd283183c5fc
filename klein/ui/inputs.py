"""Input components whose errors name their field: what Gradio would refuse with its own words (or
a bare "upstream Gradio app has raised an exception") is refused here with the field and the fix.

Each wraps one instance's preprocessing rather than subclassing: Gradio writes a .pyi file next to
any module that defines a component subclass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gradio as gr
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from .. import presets
from ..config import Limits
from ..errors import InvalidRequest
from ..images import too_many_pixels, unreadable_image
from ..presets import PARAMETERS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
URL_HINT = "give a public http(s) URL or a data URI (data:image/png;base64,...)"
GALLERY_SHAPE = 'each item must be {"image": handle_file(path), "caption": None}'


def field_error(field: str, message: str) -> gr.Error:
    return gr.Error(str(InvalidRequest(field, message)), print_exception=False)


def named_slider(field: str, *args: Any, **kwargs: Any) -> gr.Slider:
    """A Slider whose out-of-range error names its field (Gradio's own says only "Value 7 is greater...")."""
    slider = gr.Slider(*args, **kwargs)
    check_range = slider.preprocess

    def preprocess(payload: float | None) -> float | None:
        if payload is None:  # an API call that sends null (or leaves a size out): the caller decides
            return None
        try:
            return check_range(payload)
        except gr.Error:
            raise field_error(field, f"{payload!r} is out of range {slider.minimum:g}..{slider.maximum:g}") from None

    slider.preprocess = preprocess
    return slider


def parameter_slider(name: str, maximum: float | None = None, **kwargs: Any) -> gr.Slider:
    """A slider over a parameter's range from the table in presets.py."""
    parameter = PARAMETERS[name]
    top = parameter.maximum if maximum is None else maximum
    return named_slider(name, parameter.minimum, top, **kwargs)


def whole_number_input(field: str, **kwargs: Any) -> gr.Number:
    """A Number for whole numbers (precision 0) that refuses 1.5 naming the field; Gradio's own rounds it to 2."""
    number = gr.Number(precision=0, **kwargs)
    to_int = number.preprocess

    def preprocess(payload: float | None) -> int | None:
        if isinstance(payload, float) and not payload.is_integer():
            raise field_error(field, f"{payload!r} is not a whole number; use an integer in 0..{presets.SEED_MAX}")
        return to_int(payload)

    number.preprocess = preprocess
    return number


def named_image(field: str, limits: Limits, **kwargs: Any) -> gr.Image:
    """An Image input whose unreadable, oversized or unfetchable inputs are refused naming `field`.

    Gradio opens the upload's header with PIL before our checks run; PIL refuses images over about
    179 MP there with its own DecompressionBombError, which would reach the user as a bare error.
    """
    image = gr.Image(**kwargs)
    open_header = image.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return open_header(payload)
        except Image.DecompressionBombError as exc:
            message = too_many_pixels(exc, limits)
        except (UnidentifiedImageError, OSError) as exc:
            message = unreadable_image(type(exc).__name__)
        raise field_error(field, message)

    image.preprocess = preprocess
    return name_fetch_errors(image, field)


def named_gallery(field: str, **kwargs: Any) -> gr.Gallery:
    """A Gallery of image files (type filepath) whose wrong shape, non-image items and unfetchable URLs are
    refused naming the field and the item's index (Gradio's own: "Invalid file type" or a bare error)."""
    gallery = gr.Gallery(type="filepath", file_types=["image"], **kwargs)
    gallery.data_model = _NamedModel(gallery.data_model, field, GALLERY_SHAPE)

    def preprocess(payload: Any) -> list[tuple[str, str | None]] | None:
        items = []
        for index, item in enumerate(payload.root if payload is not None else []):
            media = getattr(item, "image", None) or getattr(item, "video", None)
            name = (media.orig_name or Path(media.path or "").name) if media is not None else "item"
            # A name without a suffix (a URL's last part) is left to decoding, which names the index too.
            if not hasattr(item, "image") or Path(name).suffix.lower() not in IMAGE_SUFFIXES | {""}:
                raise field_error(f"{field}[{index}]", f"{name} is not an image; references must be PNG, JPEG "
                                  "or WebP")
            items.append((item.image.path, item.caption))
        return items or None

    gallery.preprocess = preprocess
    return name_fetch_errors(gallery, field)


class _NamedModel:
    """A component's data model whose validation error is one line naming the field, not pydantic's dump."""

    def __init__(self, model: Any, field: str, expected: str):
        self._model, self._field, self._expected = model, field, expected

    def model_validate(self, value: Any, **kwargs: Any) -> Any:
        try:
            return self._model.model_validate(value, **kwargs)
        except ValidationError:
            raise field_error(self._field, self._expected) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def name_fetch_errors(component: Any, field: str) -> Any:
    """Gradio fetches an input given as a URL itself (refusing private addresses); a failure becomes an
    error naming the field and the URL (without its query, which may carry a signature)."""
    fetch = component.async_move_resource_to_block_cache

    async def move_to_cache(url_or_path: Any) -> Any:
        try:
            return await fetch(url_or_path)
        except Exception as exc:
            url = str(url_or_path)
            if isinstance(exc, gr.Error) or not url.startswith(("http://", "https://")):
                raise
            parts = urlsplit(url)
            shown = f"{parts.scheme}://{parts.netloc}{parts.path}"[:200]
            raise field_error(field, f"could not fetch {shown} ({_fetch_failure(exc)}); {URL_HINT}") from None

    component.async_move_resource_to_block_cache = move_to_cache
    return component


def _fetch_failure(exc: Exception) -> str:
    text = str(exc)
    if "failed validation" in text:
        return "a private, loopback or local address, which this server does not fetch"
    if "Status code:" in text:
        return f"the server answered HTTP {text.rsplit(':', 1)[1].strip()}"
    if "resolve hostname" in text:
        return "the host name does not resolve"
    return "the server did not answer"
