"""Inpainting: diffusers' Flux2KleinInpaintPipeline made from the loaded pipeline's components (no second
copy of the weights), and the composite that keeps every pixel outside the mask as it was.

diffusers blends the original back in latent space, which is not pixel-exact (the VAE round trip and
the 16-pixel alignment change what the mask did not cover). So the generated image is put back on the
original through the mask, feathered a few pixels at its edge: outside the mask and its feather the
output is the input, pixel for pixel.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import Flux2KleinInpaintPipeline
from PIL import Image, ImageFilter

from ..errors import InvalidRequest
from ..images import MODEL_REFERENCE_AREA
from ..presets import SIZE_MULTIPLE
from .pipeline import LoadedModel

FEATHER_RADIUS = 3  # pixels of Gaussian blur on the mask's edge: no seam, and far pixels stay exact


class KleinInpaintPipeline(Flux2KleinInpaintPipeline):
    """diffusers' inpaint pipeline with any number of reference images (its own call takes one): the
    extra ones join the conditioning images it encodes, as Flux2KleinPipeline's references do."""

    extra_references: list[torch.Tensor] = []

    def prepare_image_latents(self, images, *args, **kwargs):
        return super().prepare_image_latents([*images, *self.extra_references], *args, **kwargs)


def inpaint_pipeline(model: LoadedModel) -> KleinInpaintPipeline:
    """The inpaint pipeline over the model's own components, made once and kept with the model."""
    pipe = getattr(model, "_inpaint_pipe", None)
    if pipe is None:
        pipe = KleinInpaintPipeline.from_pipe(model.pipe)
        pipe.set_progress_bar_config(disable=True)
        object.__setattr__(model, "_inpaint_pipe", pipe)
    return pipe


def generation_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size the model paints at: the image's, at most 1 MP as diffusers takes an image (the result is
    scaled back and composited onto the full-size input), aligned down to whole 16-pixel patches."""
    scale = min(1.0, math.sqrt(MODEL_REFERENCE_AREA / (size[0] * size[1])))
    return tuple(max(SIZE_MULTIPLE, int(side * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in size)


def inpaint_steps(steps: int, strength: float) -> int:
    """Denoising steps that run, as diffusers' get_timesteps counts them: it starts part-way for strength < 1."""
    skipped = int(max(steps - min(steps * strength, steps), 0))
    return steps - skipped


def check_strength(steps: int, strength: float) -> None:
    """Refuse a strength that leaves no denoising step (it would repaint nothing), naming strength."""
    if inpaint_steps(steps, strength) < 1:
        raise InvalidRequest("strength", f"{strength:g} with {steps} steps leaves no step to run: it would "
                             "repaint nothing; raise it above 0 (1 repaints the masked area anew)")


def run_inpaint(model: LoadedModel, job, call: dict[str, Any]) -> torch.Tensor:
    """Latents for `job` (images[0] the image, images[1:] references, job.mask the mask); `call` holds the
    arguments every pipeline call takes (embeddings, size, steps, guidance, generator, step callback)."""
    pipe = inpaint_pipeline(model)
    size = (job.width, job.height)
    pipe.extra_references = [_preprocess_reference(pipe, image) for image in job.images[1:]]
    try:
        return pipe(image=job.images[0].resize(size, Image.Resampling.LANCZOS),
                    mask_image=job.mask.resize(size, Image.Resampling.LANCZOS), strength=job.strength, **call).images
    finally:
        pipe.extra_references = []


def composite(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """`generated` where the mask is white, `original` where it is black, blended over a short feather."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.Resampling.LANCZOS)
    feathered = mask.filter(ImageFilter.GaussianBlur(FEATHER_RADIUS))
    return Image.composite(generated, original, feathered)


def _preprocess_reference(pipe: KleinInpaintPipeline, image: Image.Image) -> torch.Tensor:
    """A reference as the pipeline prepares its own: whole 16-pixel patches, scaled to -1..1."""
    width, height = generation_size(image.size)
    return pipe.image_processor.preprocess(image, height, width, resize_mode="crop")
