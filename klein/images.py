"""Decode and validate reference images (pure: PIL only).

Sizes are checked from the header before any pixel is decoded, so a decompression bomb is refused,
not decoded; decoding shares one pixel budget across concurrent requests, and a decoded reference
is shrunk to the area the model reads. Every failure is an InvalidRequest that names the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

from PIL import Image, ImageChops, ImageOps

from .config import Limits
from .errors import InvalidRequest, QueueFull

ImageSource = Union[Image.Image, str, Path, bytes]
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
MODEL_REFERENCE_AREA = 1024 * 1024  # Flux2KleinPipeline resizes larger reference images to this area


def load_reference(source: ImageSource, field: str, limits: Limits = Limits(), mask: bool = False,
                   full_size: bool = False) -> Image.Image:
    """Turn a PIL image, file path, raw bytes, base64 string or data URI into a checked RGB image (or,
    with `mask`, a grayscale inpainting mask: white repaints, black keeps), shrunk as the model shrinks it
    unless `full_size` (the image an inpaint paints on, and its mask: the result keeps the input's size).

    Args:
        source: the image in any of the accepted forms.
        field: the request field it came from, named in every error (e.g. "images[2]").
        limits: byte, pixel, side and aspect limits.
        mask: read it as a mask; a colour image is refused.
        full_size: keep its size (still within `limits`).
    """
    if isinstance(source, Image.Image):
        _check_dimensions(source.size, field, limits)
        image = _to_mask(source, field) if mask else _to_rgb(source)
        return image if full_size else shrink_to_model_area(image)
    data = _read_bytes(source, field, limits)
    return decode_image_bytes(data, field, limits, mask, full_size)


def decode_image_bytes(data: bytes, field: str, limits: Limits = Limits(), mask: bool = False,
                       full_size: bool = False) -> Image.Image:
    """Decode PNG/JPEG/WebP bytes after checking their size and the header's dimensions."""
    if len(data) > limits.max_image_bytes:
        raise InvalidRequest(field, f"image is {len(data):,} bytes; the limit is {limits.max_image_bytes:,} bytes")
    try:
        with warnings.catch_warnings():
            # Opening reads only the header; our own pixel limit below is checked before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InvalidRequest(field, too_many_pixels(exc, limits)) from None
    except Exception:
        raise InvalidRequest(
            field, unreadable_image(f"{len(data):,} bytes")
        ) from None
    _check_dimensions(image.size, field, limits)
    with DECODE_BUDGET.reserve(image.width * image.height, field):
        try:
            image.load()
        except Exception as exc:
            raise InvalidRequest(field, f"image data is corrupt or truncated ({type(exc).__name__})") from None
        image = _to_mask(image, field) if mask else _to_rgb(image)
        return image if full_size else shrink_to_model_area(image)


class PixelBudget:
    """Pixels being decoded at once, across all requests: a decode waits for room, so four 36 MP
    images sent together cost one budget of memory, not four. Decoded references are shrunk to
    what the model reads (shrink_to_model_area) before their room is given back."""

    def __init__(self, pixels: int, wait_seconds: float = 30.0):
        self.pixels, self.wait_seconds = pixels, wait_seconds
        self._used = 0
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int, field: str) -> Iterator[None]:
        pixels = min(pixels, self.pixels)  # one image alone may always be decoded
        with self._room:
            if not self._room.wait_for(lambda: self._used + pixels <= self.pixels, timeout=self.wait_seconds):
                raise QueueFull(f"{field}: the server is busy decoding other images; try again shortly",
                                retry_after=1)
            self._used += pixels
        try:
            yield
        finally:
            with self._room:
                self._used -= pixels
                self._room.notify_all()


DECODE_BUDGET = PixelBudget(2 * Limits().max_image_pixels)


def shrink_to_model_area(image: Image.Image, area: int = MODEL_REFERENCE_AREA) -> Image.Image:
    """A reference larger than `area` pixels, resized as Flux2KleinPipeline resizes it (same size,
    same filter), so the pipeline leaves it as it is and the pixels it sees are the same; only
    the large original is no longer kept while the request waits and runs."""
    width, height = image.size
    if width * height <= area:
        return image
    scale = math.sqrt(area / (width * height))
    return image.resize((int(width * scale), int(height * scale)), Image.Resampling.LANCZOS)


def unreadable_image(detail: str) -> str:
    """The message for data that is not an image of an accepted format."""
    return f"not a readable image ({detail}); accepted formats are PNG, JPEG and WebP"


def too_many_pixels(exc: Image.DecompressionBombError, limits: Limits) -> str:
    """The message for an image PIL refuses to open (over twice its own pixel limit), with its size."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f" ({int(found.group(1)):,} pixels)" if found else ""
    return f"image is too large to decode safely{pixels}; the limit is {limits.max_image_pixels:,} pixels"


def _read_bytes(source: str | Path | bytes, field: str, limits: Limits) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if isinstance(source, str) and (source.startswith("data:") or (len(source) > 256 and not path.is_file())):
        return decode_base64(source, field, limits)
    if not path.is_file():
        raise InvalidRequest(field, f"no image file at {str(source)[:200]!r}")
    size = path.stat().st_size
    if size > limits.max_image_bytes:
        raise InvalidRequest(field, f"image is {size:,} bytes; the limit is {limits.max_image_bytes:,} bytes")
    return path.read_bytes()


def decode_base64(text: str, field: str, limits: Limits = Limits(),
                  expected: str = "valid base64 image data") -> bytes:
    """The bytes of a base64 data URI or of bare base64 text, refused past the byte limit."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise InvalidRequest(field, f"data URI must be base64-encoded, got {header[:40]!r}")
    if len(text) * 3 // 4 > limits.max_image_bytes:
        raise InvalidRequest(field, f"image is over the limit of {limits.max_image_bytes:,} bytes")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(field, f"not {expected}") from None


def _check_dimensions(size: tuple[int, int], field: str, limits: Limits) -> None:
    width, height = size
    if width * height > limits.max_image_pixels:
        raise InvalidRequest(
            field, f"image is {width}x{height} ({width * height:,} pixels); the limit is {limits.max_image_pixels:,}"
        )
    if min(width, height) < limits.min_image_side:
        raise InvalidRequest(field, f"image is {width}x{height}; each side must be at least {limits.min_image_side} px")
    if max(width, height) / min(width, height) > limits.max_image_aspect:
        raise InvalidRequest(
            field, f"image is {width}x{height}; the aspect ratio must be at most {limits.max_image_aspect:g}:1"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, not black, as users expect from a flattened image.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _to_mask(image: Image.Image, field: str) -> Image.Image:
    """A grayscale mask. Transparent areas keep (an unpainted brush layer is transparent); colour is refused,
    since which channel would be the mask is a guess."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("1", "L"):
        return image.convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (0, 0, 0))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    red, green, blue = image.convert("RGB").split()
    if ImageChops.difference(red, green).getbbox() or ImageChops.difference(green, blue).getbbox():
        raise InvalidRequest(field, "is a colour image; a mask is grayscale: white where to repaint, black where "
                             "to keep")
    return red
