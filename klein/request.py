"""GenerationRequest: the one place where a request is validated (pure: no torch).

Every adapter (UI, Gradio API, REST) builds one of these; a bad value fails here, first, with a
message that names the field and the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from PIL import Image

from . import presets
from .config import Limits
from .errors import InvalidRequest
from .presets import (
    DEFAULT_OUTPUT_FORMAT,
    DEFAULT_SAFETY_TOLERANCE,
    GUIDANCE,
    LORA_SCALE,
    LORAS,
    MAX_LORA_PATH,
    MAX_REFERENCES,
    NUM_IMAGES,
    OUTPUT_FORMATS,
    SAFETY_TOLERANCE,
    STEPS,
    STRENGTH,
)


class Workflow(str, Enum):
    TEXT_TO_IMAGE = "text_to_image"
    EDIT = "edit"
    MULTI_REFERENCE = "multi_reference"
    INPAINT = "inpaint"

    @classmethod
    def for_image_count(cls, count: int) -> "Workflow":
        if count == 0:
            return cls.TEXT_TO_IMAGE
        return cls.EDIT if count == 1 else cls.MULTI_REFERENCE


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA of a request, as the user names it (klein/generation/loras.py finds it).

    Args:
        path: a .safetensors file or folder in the LoRA folder (relative to it, with or without the
            extension), or a Hugging Face hub id `owner/name` (or `owner/name/file.safetensors`, or a
            huggingface.co file URL).
        scale: -1..4; 1 applies it as trained, 0 turns it off.
        weight_name: for a hub id or folder holding several .safetensors files, which one.
    """

    path: str
    scale: float = float(LORA_SCALE.default)
    weight_name: str | None = None

    def to_dict(self) -> dict:
        """The JSON shape (REST's `{"path", "scale"}`, the image metadata's), weight_name only when set."""
        named = {"weight_name": self.weight_name} if self.weight_name else {}
        return {"path": self.path, "scale": self.scale} | named


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
        loras: up to 3 LoraSpec (or mappings with path, scale, weight_name), applied in order.
        mask: inpainting: a grayscale mask the size of images[0] (white repaints, black keeps); the other
            images are references. The output has images[0]'s size.
        strength: inpainting: 0..1, how much of the masked area is repainted (1: all of it).
        enhance_prompt: rewrite the prompt with the model's text encoder first (generation/enhance.py).
        num_images: 1..4 images; image i uses seed + i (mod 2**32), so each reproduces alone with its seed.
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
    loras: tuple[LoraSpec, ...] = ()
    mask: Image.Image | None = None
    strength: float = float(STRENGTH.default)
    enhance_prompt: bool = False
    num_images: int = 1
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
        object.__setattr__(self, "loras", check_loras(self.loras))
        self._check_inpaint()
        if not isinstance(self.enhance_prompt, bool):
            raise InvalidRequest("enhance_prompt", f"must be true or false, got {self.enhance_prompt!r}")
        self._check_num_images()

    @property
    def workflow(self) -> Workflow:
        return Workflow.INPAINT if self.mask is not None else Workflow.for_image_count(len(self.images))

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the image to generate."""
        if self.mask is not None:
            return self.images[0].size
        if self.width is not None and self.height is not None:
            return self.width, self.height
        if self.aspect_ratio == presets.MATCH_INPUT:
            return presets.size_matching(self.images[0].size, self.resolution)
        return presets.size_for_preset(self.aspect_ratio, self.resolution)

    def _check_prompt(self) -> None:
        if not isinstance(self.prompt, str):
            raise InvalidRequest("prompt", f"must be text, got {type(self.prompt).__name__}")
        if len(self.prompt) > presets.MAX_PROMPT_CHARACTERS:
            raise InvalidRequest("prompt", f"is {len(self.prompt):,} characters long; the limit is "
                                 f"{presets.MAX_PROMPT_CHARACTERS:,}")
        if not self.prompt.strip():
            raise InvalidRequest("prompt", "is empty; describe the image you want")
        surrogate = _unpaired_surrogate(self.prompt)
        if surrogate is not None:
            raise InvalidRequest("prompt", f"contains an unpaired surrogate ({surrogate!r}); send valid Unicode text")

    def _check_images(self) -> None:
        check_reference_count(len(self.images))
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

    def _check_num_images(self) -> None:
        if isinstance(self.num_images, bool) or not isinstance(self.num_images, int):
            raise InvalidRequest("num_images", f"must be an integer {NUM_IMAGES.range_text()}, got {self.num_images!r}")
        if not NUM_IMAGES.minimum <= self.num_images <= NUM_IMAGES.maximum:
            raise InvalidRequest("num_images", f"{self.num_images} is out of range {NUM_IMAGES.range_text()}")

    def seeds(self, seed: int) -> list[int]:
        """The seed of each image, given the batch's first."""
        return [presets.batch_seed(seed, index) for index in range(self.num_images)]

    def _check_sampling(self) -> None:
        if self.steps is not None:
            if isinstance(self.steps, bool) or not isinstance(self.steps, int):
                raise InvalidRequest("steps", f"must be an integer, got {self.steps!r}")
            if not STEPS.minimum <= self.steps <= STEPS.maximum:
                raise InvalidRequest("steps", f"{self.steps} is out of range {STEPS.range_text()}")
        if self.guidance is not None:
            if not isinstance(self.guidance, (int, float)) or not math.isfinite(self.guidance):
                raise InvalidRequest("guidance", f"must be a number, got {self.guidance!r}")
            if not GUIDANCE.minimum <= self.guidance <= GUIDANCE.maximum:
                raise InvalidRequest("guidance", f"{self.guidance:g} is out of range {GUIDANCE.range_text()}")

    def _check_safety_tolerance(self) -> None:
        value = self.safety_tolerance
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest("safety_tolerance", f"must be an integer {SAFETY_TOLERANCE.range_text()}, "
                                 f"got {value!r}")
        if not SAFETY_TOLERANCE.minimum <= value <= SAFETY_TOLERANCE.maximum:
            raise InvalidRequest("safety_tolerance", f"{value} is out of range {SAFETY_TOLERANCE.range_text()}")


    def _check_inpaint(self) -> None:
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) \
                or not math.isfinite(self.strength):
            raise InvalidRequest("strength", f"must be a number {STRENGTH.range_text()}, got {self.strength!r}")
        if not STRENGTH.minimum <= self.strength <= STRENGTH.maximum:
            raise InvalidRequest("strength", f"{self.strength:g} is out of range {STRENGTH.range_text()}")
        if self.mask is None:
            return
        if not isinstance(self.mask, Image.Image) or self.mask.mode != "L":
            raise InvalidRequest("mask", "must be a decoded grayscale image (images.load_reference(..., mask=True))")
        if not self.images:
            raise InvalidRequest("image", "inpainting needs the image to paint on, as well as the mask")
        if self.mask.size != self.images[0].size:
            raise InvalidRequest("mask", f"is {self.mask.width}x{self.mask.height}; it must be the image's size, "
                                 f"{self.images[0].width}x{self.images[0].height}")
        if self.mask.getextrema()[1] == 0:
            raise InvalidRequest("mask", "is all black: nothing to repaint; paint the area to change in white")


def check_loras(loras: object) -> tuple[LoraSpec, ...]:
    """The request's LoRAs as LoraSpecs, each checked; errors name `loras[i].path`, `loras[i].scale`."""
    if loras is None:
        return ()
    if isinstance(loras, (str, bytes, Mapping)) or not isinstance(loras, (list, tuple)):
        raise InvalidRequest("loras", f"must be a list of {{path, scale}}, got {type(loras).__name__}")
    if len(loras) > LORAS.maximum:
        raise InvalidRequest("loras", f"{len(loras)} LoRAs given, at most {LORAS.maximum:g} are supported")
    specs = tuple(_lora_spec(item, f"loras[{i}]") for i, item in enumerate(loras))
    seen: dict[tuple[str, str | None], int] = {}
    for index, spec in enumerate(specs):
        first = seen.setdefault((spec.path, spec.weight_name), index)
        if first != index:
            raise InvalidRequest(f"loras[{index}].path", f"{spec.path!r} is loras[{first}] already; give it once, "
                                 "with the scale you want")
    return specs


def _lora_spec(item: object, name: str) -> LoraSpec:
    if isinstance(item, LoraSpec):
        path, scale, weight_name = item.path, item.scale, item.weight_name
    elif isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in ("path", "scale", "weight_name"))
        if unknown:
            raise InvalidRequest(f"{name}.{unknown[0]}", "is not a field of a LoRA; its fields are path, scale, "
                                 "weight_name")
        if "path" not in item:
            raise InvalidRequest(f"{name}.path", "is missing; name a .safetensors file, a folder or a hub id")
        path, scale, weight_name = item["path"], item.get("scale", LORA_SCALE.default), item.get("weight_name")
    else:
        raise InvalidRequest(name, f"must be {{path, scale}}, got {type(item).__name__}")
    _check_lora_text(f"{name}.path", path)
    if weight_name is not None:
        _check_lora_text(f"{name}.weight_name", weight_name)
        if not weight_name.endswith(".safetensors"):
            raise InvalidRequest(f"{name}.weight_name", f"{weight_name!r} is not a .safetensors file name")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise InvalidRequest(f"{name}.scale", f"must be a number {LORA_SCALE.range_text()}, got {scale!r}")
    if not LORA_SCALE.minimum <= scale <= LORA_SCALE.maximum:
        raise InvalidRequest(f"{name}.scale", f"{scale:g} is out of range {LORA_SCALE.range_text()}")
    return LoraSpec(path=path.strip(), scale=float(scale), weight_name=weight_name)


def _check_lora_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(name, f"must be text, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRequest(name, "is empty; name a .safetensors file, a folder or a hub id")
    if len(value) > MAX_LORA_PATH:
        raise InvalidRequest(name, f"is {len(value):,} characters long; the limit is {MAX_LORA_PATH:,}")
    if any(ord(c) < 32 for c in value) or _unpaired_surrogate(value) is not None:
        raise InvalidRequest(name, f"{value[:80]!r} contains control characters or invalid Unicode")


def check_reference_count(count: int, field: str = "images", minimum: int = 0) -> None:
    """The one rule for how many reference images a request may have; adapters call it before decoding any."""
    given = f"{count} reference image{'s' if count != 1 else ''} given"
    if minimum and not minimum <= count <= MAX_REFERENCES:
        raise InvalidRequest(field, f"{given}, multi-reference needs {minimum} to {MAX_REFERENCES}")
    if count > MAX_REFERENCES:
        raise InvalidRequest(field, f"{given}, at most {MAX_REFERENCES} are supported")


def _check_side(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"must be an integer, got {value!r}")
    if not presets.MIN_SIDE <= value <= presets.MAX_SIDE:
        raise InvalidRequest(name, f"{value} is out of range {presets.MIN_SIDE}..{presets.MAX_SIDE}")
    if value % presets.SIZE_MULTIPLE:
        raise InvalidRequest(name, f"{value} is not a multiple of {presets.SIZE_MULTIPLE}")


def _unpaired_surrogate(text: str) -> str | None:
    """The first lone UTF-16 surrogate in `text` (JSON can carry one; no tokenizer can read it), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.object[exc.start]
    return None


def _normalise_format(value: str) -> str:
    fmt = str(value).strip().lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in OUTPUT_FORMATS:
        raise InvalidRequest("output_format", f"{value!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    return fmt
