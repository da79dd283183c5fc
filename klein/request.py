"""GenerationRequest: the one place where a request is validated (pure: no torch).

Every adapter (UI, Gradio API, REST) builds one of these; a bad value fails here, first, with a
message that names the field and the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from PIL import Image

from . import presets
from .config import Limits
from .errors import InvalidRequest

OUTPUT_FORMATS = ("png", "jpeg", "webp")
# JPEG q95 encodes a 2048x2048 image in ~27 ms on 2 CPU cores; PNG takes ~450 ms (docs/BENCHMARKS.md).
DEFAULT_OUTPUT_FORMAT = "jpeg"
DEFAULT_SAFETY_TOLERANCE = 2
MAX_SAFETY_TOLERANCE = 5


class Workflow(str, Enum):
    TEXT_TO_IMAGE = "text_to_image"
    EDIT = "edit"
    MULTI_REFERENCE = "multi_reference"

    @classmethod
    def for_image_count(cls, count: int) -> "Workflow":
        if count == 0:
            return cls.TEXT_TO_IMAGE
        return cls.EDIT if count == 1 else cls.MULTI_REFERENCE


@dataclass(frozen=True)
class GenerationRequest:
    """What the user asked for. Construction validates; an instance is always usable.

    Args:
        prompt: what to generate or how to edit.
        images: 0 (text-to-image), 1 (edit) or 2..4 (multi-reference) decoded RGB reference images.
        aspect_ratio: a preset name of either table, or "match_input" (needs a reference image).
        resolution: "1k" or "2k".
        seed: 0..4294967295, or None for a random seed.
        width, height: custom size (both or neither), multiples of 16 in 64..2048; override the preset.
        steps, guidance: None for the model's defaults.
        output_format: "png", "jpeg" or "webp".
        safety_tolerance: 0 (strictest) .. 5 (most permissive); see safety.py.
    """

    prompt: str
    images: tuple[Image.Image, ...] = ()
    aspect_ratio: str = "square_1_1"
    resolution: str = "1k"
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    output_format: str = DEFAULT_OUTPUT_FORMAT
    safety_tolerance: int = DEFAULT_SAFETY_TOLERANCE
    limits: Limits = field(default=Limits(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "output_format", _normalise_format(self.output_format))
        self._check_prompt()
        self._check_images()
        self._check_size()
        self._check_seed()
        self._check_sampling()
        self._check_safety_tolerance()

    @property
    def workflow(self) -> Workflow:
        return Workflow.for_image_count(len(self.images))

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the image to generate."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        if self.aspect_ratio == presets.MATCH_INPUT:
            return presets.size_matching(self.images[0].size, self.resolution)
        return presets.size_for_preset(self.aspect_ratio, self.resolution)

    def _check_prompt(self) -> None:
        if not isinstance(self.prompt, str):
            raise InvalidRequest("prompt", f"must be text, got {type(self.prompt).__name__}")
        if not self.prompt.strip():
            raise InvalidRequest("prompt", "is empty; describe the image you want")

    def _check_images(self) -> None:
        count = len(self.images)
        if count > self.limits.max_references:
            raise InvalidRequest(
                "images", f"{count} reference images given, at most {self.limits.max_references} are supported"
            )
        for index, image in enumerate(self.images):
            if not isinstance(image, Image.Image):
                raise InvalidRequest(f"images[{index}]", f"must be a decoded image, got {type(image).__name__}")

    def _check_size(self) -> None:
        if self.resolution not in presets.RESOLUTIONS:
            raise InvalidRequest("resolution", f"{self.resolution!r} is not one of {', '.join(presets.RESOLUTIONS)}")
        if self.aspect_ratio == presets.MATCH_INPUT:
            if not self.images and (self.width is None or self.height is None):
                raise InvalidRequest("aspect_ratio", "'match_input' needs a reference image; choose a preset instead")
        elif self.aspect_ratio not in presets.ASPECT_PRESETS:
            raise InvalidRequest(
                "aspect_ratio",
                f"{self.aspect_ratio!r} is not a preset; use one of {', '.join(presets.ASPECT_PRESETS)}"
                f" or {presets.MATCH_INPUT}",
            )
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise InvalidRequest(missing, "custom size needs both width and height")
        for name in ("width", "height"):
            _check_side(name, getattr(self, name))

    def _check_seed(self) -> None:
        if self.seed is None:
            return
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidRequest("seed", f"must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= presets.SEED_MAX:
            raise InvalidRequest("seed", f"{self.seed} is out of range 0..{presets.SEED_MAX}")

    def _check_sampling(self) -> None:
        lim = self.limits
        if self.steps is not None:
            if isinstance(self.steps, bool) or not isinstance(self.steps, int):
                raise InvalidRequest("steps", f"must be an integer, got {self.steps!r}")
            if not lim.min_steps <= self.steps <= lim.max_steps:
                raise InvalidRequest("steps", f"{self.steps} is out of range {lim.min_steps}..{lim.max_steps}")
        if self.guidance is not None:
            if not isinstance(self.guidance, (int, float)) or not math.isfinite(self.guidance):
                raise InvalidRequest("guidance", f"must be a number, got {self.guidance!r}")
            if not lim.min_guidance <= self.guidance <= lim.max_guidance:
                raise InvalidRequest(
                    "guidance", f"{self.guidance:g} is out of range {lim.min_guidance:g}..{lim.max_guidance:g}"
                )


    def _check_safety_tolerance(self) -> None:
        value = self.safety_tolerance
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest("safety_tolerance", f"must be an integer 0..{MAX_SAFETY_TOLERANCE}, got {value!r}")
        if not 0 <= value <= MAX_SAFETY_TOLERANCE:
            raise InvalidRequest("safety_tolerance", f"{value} is out of range 0..{MAX_SAFETY_TOLERANCE}")


def _check_side(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"must be an integer, got {value!r}")
    if not presets.MIN_SIDE <= value <= presets.MAX_SIDE:
        raise InvalidRequest(name, f"{value} is out of range {presets.MIN_SIDE}..{presets.MAX_SIDE}")
    if value % presets.SIZE_MULTIPLE:
        raise InvalidRequest(name, f"{value} is not a multiple of {presets.SIZE_MULTIPLE}")


def _normalise_format(value: str) -> str:
    fmt = str(value).strip().lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in OUTPUT_FORMATS:
        raise InvalidRequest("output_format", f"{value!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    return fmt
