"""Aspect-ratio presets, the 1k/2k resolution rule and the parameter table (pure: no torch).

The two preset tables are those of the hosted Klein APIs; both are accepted everywhere. PARAMETERS
holds every request parameter's default, range and description: the UI's controls, the Gradio API
and MCP descriptions, the REST schemas and GenerationRequest's checks all read it, so a default or
a limit is written once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SIZE_MULTIPLE = 16
MAX_SIDE = 2048
MIN_SIDE = 64
SEED_MAX = 2**32 - 1
RESOLUTIONS = ("1k", "2k")
MATCH_INPUT = "match_input"

# Base sizes at 1k, in the order the hosted API documents them.
ASPECT_PRESETS_V1: dict[str, tuple[int, int]] = {
    "square_1_1": (1024, 1024),
    "widescreen_16_9": (1344, 768),
    "social_story_9_16": (768, 1344),
    "portrait_2_3": (832, 1216),
    "traditional_3_4": (960, 1280),
    "vertical_1_2": (704, 1408),
    "horizontal_2_1": (1408, 704),
    "social_post_4_5": (896, 1152),
    "standard_3_2": (1216, 832),
    "classic_4_3": (1280, 960),
}
ASPECT_PRESETS_V2: dict[str, tuple[int, int]] = {
    "square": (1024, 1024),
    "landscape": (1344, 768),
    "portrait": (768, 1344),
    "photo": (1248, 832),
    "photo_v": (832, 1248),
    "standard": (1184, 896),
    "standard_v": (896, 1184),
    "wide": (1568, 672),
}
ASPECT_PRESETS: dict[str, tuple[int, int]] = {**ASPECT_PRESETS_V1, **ASPECT_PRESETS_V2}


def align(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    """Round to the nearest multiple (at least one multiple)."""
    return max(multiple, int(round(value / multiple)) * multiple)


def scale_to_resolution(width: int, height: int, resolution: str) -> tuple[int, int]:
    """Apply the 1k/2k rule to a 1k base size.

    1k keeps the base size; 2k doubles it, then scales both sides down so the longer is at most
    2048, then aligns both to multiples of 16.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    factor = 1 if resolution == "1k" else 2
    w, h = width * factor, height * factor
    longest = max(w, h)
    if longest > MAX_SIDE:
        w, h = w * MAX_SIDE / longest, h * MAX_SIDE / longest
    return align(w), align(h)


def size_for_preset(preset: str, resolution: str) -> tuple[int, int]:
    """(width, height) of a named preset at a resolution."""
    return scale_to_resolution(*ASPECT_PRESETS[preset], resolution)


def size_matching(reference_size: tuple[int, int], resolution: str) -> tuple[int, int]:
    """(width, height) with the reference's aspect ratio and about 1 MP (1k) or 4 MP (2k)."""
    ref_w, ref_h = reference_size
    side = 1024
    scale = (side * side / (ref_w * ref_h)) ** 0.5
    return scale_to_resolution(ref_w * scale, ref_h * scale, resolution)


def random_seed() -> int:
    return random.SystemRandom().randint(0, SEED_MAX)


# --- the parameter table ---------------------------------------------------------------------------

OUTPUT_FORMATS = ("png", "jpeg", "webp")
# JPEG q95 encodes a 2048x2048 image in ~25 ms on 2 CPU cores; PNG takes ~500 ms (docs/BENCHMARKS.md).
DEFAULT_OUTPUT_FORMAT = "jpeg"
MAX_REFERENCES = 4
# Checked before tokenising: the model reads at most 512 tokens (about 2,000 characters of English),
# and a 10 MB prompt would cost seconds and gigabytes to tokenise only to be refused.
MAX_PROMPT_CHARACTERS = 10_000
MULTI_REFERENCE_MIN = 2
DISTILLED_MAX_STEPS = 16  # the steps slider's end for distilled models (4 is their default)
MIN_STEPS, MAX_STEPS = 1, 100
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
MAX_TOLERANCE = 5
MAX_LORAS = 3  # adapters per request, as the hosted LoRA endpoints allow
MIN_LORA_SCALE, MAX_LORA_SCALE = -1.0, 4.0
MAX_LORA_PATH = 1024  # characters of a LoRA's path or hub id
MAX_NUM_IMAGES = 4  # images per request, as fal's klein endpoints allow


def batch_seed(seed: int, index: int) -> int:
    """The seed of a batch's image `index`: seed + index, wrapping past SEED_MAX to 0."""
    return (seed + index) % (SEED_MAX + 1)


@dataclass(frozen=True)
class Parameter:
    """One request parameter: its default, its range (numbers) and the description every API shows.

    A default of None means "chosen per request": a random seed, the model's steps and guidance.
    """

    name: str
    default: object
    doc: str
    minimum: float | None = None
    maximum: float | None = None

    def range_text(self) -> str:
        return f"{self.minimum:g}..{self.maximum:g}"


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("prompt", "", "what the image should show, or the edit to make.", 1, MAX_PROMPT_CHARACTERS),
    Parameter("aspect_ratio", "square_1_1", "a preset such as square_1_1, widescreen_16_9, landscape or portrait; "
              "match_input (edit and multi-reference) keeps the first image's aspect ratio."),
    Parameter("resolution", "1k", '"1k" (about 1 megapixel) or "2k" (about 4 megapixels, longer side at most 2048).'),
    Parameter("seed", None, f"the seed, 0..{SEED_MAX}; random when not given. The seed used is always returned.",
              0, SEED_MAX),
    Parameter("output_format", DEFAULT_OUTPUT_FORMAT, '"jpeg" (default, fastest), "png" or "webp".'),
    Parameter("width", 1024, f"custom width in pixels, a multiple of {SIZE_MULTIPLE} in {MIN_SIDE}..{MAX_SIDE} "
              "(with height; overrides the preset).", MIN_SIDE, MAX_SIDE),
    Parameter("height", 1024, f"custom height in pixels, a multiple of {SIZE_MULTIPLE} in {MIN_SIDE}..{MAX_SIDE} "
              "(with width).", MIN_SIDE, MAX_SIDE),
    Parameter("steps", None, f"denoising steps, {MIN_STEPS}..{MAX_STEPS} (the model's default: 4 for distilled "
              "models, 50 for base models).", MIN_STEPS, MAX_STEPS),
    Parameter("guidance", None, f"guidance scale {MIN_GUIDANCE:g}..{MAX_GUIDANCE:g}, used by base models only "
              "(default 4).", MIN_GUIDANCE, MAX_GUIDANCE),
    Parameter("safety_tolerance", 2, f"0 (strictest) to {MAX_TOLERANCE} (most permissive), default 2; moderates "
              "the prompt, the reference images and the result.", 0, MAX_TOLERANCE),
    Parameter("loras", (), f"up to {MAX_LORAS} LoRA adapters, each a path and a scale: a .safetensors file or folder "
              "in the server's LoRA folder, or a Hugging Face hub id (owner/name, with weight_name when the repository "
              "holds several files).", 0, MAX_LORAS),
    Parameter("lora_scale", 1.0, f"how strongly a LoRA applies, {MIN_LORA_SCALE:g}..{MAX_LORA_SCALE:g}: 1 as "
              "trained, 0 off, negative pushes away from it.", MIN_LORA_SCALE, MAX_LORA_SCALE),
    Parameter("strength", 1.0, "inpainting: how much of the masked area is repainted, 0..1; 1 (default) paints it "
              "anew, lower values keep more of what is there.", 0.0, 1.0),
    Parameter("num_images", 1, f"how many images to make, 1..{MAX_NUM_IMAGES}: image i uses seed + i, so each "
              "reproduces alone with its own seed; an image refused by moderation is left out and reported.",
              1, MAX_NUM_IMAGES),
)}
SAFETY_TOLERANCE = PARAMETERS["safety_tolerance"]
STEPS = PARAMETERS["steps"]
GUIDANCE = PARAMETERS["guidance"]
LORAS = PARAMETERS["loras"]
LORA_SCALE = PARAMETERS["lora_scale"]
STRENGTH = PARAMETERS["strength"]
NUM_IMAGES = PARAMETERS["num_images"]
DEFAULT_SAFETY_TOLERANCE = int(SAFETY_TOLERANCE.default)
MAX_SAFETY_TOLERANCE = int(SAFETY_TOLERANCE.maximum)
