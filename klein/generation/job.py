"""One pipeline call: the job's plain data, the ZeroGPU reservation it needs, and running it.

run_job is what runs on the GPU. On a ZeroGPU Space spaces.GPU runs it in a forked worker that
gets the job pickled, so a job is plain data and the model is found by its key (cached_model).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import spaces  # on ZeroGPU Spaces it must be imported before torch touches CUDA (engine.py does so first)
import torch
from PIL import Image

from ..errors import InvalidRequest
from ..presets import batch_seed
from .adapters import adapters_for, text_encoder_adapters
from .inpaint import composite, inpaint_steps, run_inpaint
from .loras import ActiveLora
from .pipeline import LoadedModel, cached_model
from .prompt_cache import prompt_key

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Job:
    """What one pipeline call needs; plain data, so ZeroGPU can pickle it into its GPU worker."""

    model_key: tuple[str, ...]
    prompt: str
    images: tuple[Image.Image, ...]
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    model_scale: float = 1.0  # the transformer's size relative to the 4B model's, for ZeroGPU durations
    cfg: bool = False  # classifier-free guidance: a base model with guidance > 1, two transformer calls a step
    loras: tuple[ActiveLora, ...] = ()  # applied inside the lane, so no other job's adapters are active
    mask: Image.Image | None = None  # inpainting: images[0] is painted where the mask is white
    strength: float = 1.0
    num_images: int = 1  # a batch: image i uses seed + i (presets.batch_seed)

    @property
    def seeds(self) -> list[int]:
        return [batch_seed(self.seed, index) for index in range(self.num_images)]

    @property
    def denoising_steps(self) -> int:
        """Steps the pipeline runs: all of them, or for inpainting the part that strength asks for."""
        return self.steps if self.mask is None else inpaint_steps(self.steps, self.strength)


GPU_SECONDS_CAP = 120  # ZeroGPU refuses longer reservations for most accounts


def estimated_gpu_seconds(job: Job) -> float:
    """The GPU time a job needs: grows with pixels, steps, reference count, model size, CFG and images.

    About 1.5 s per step-megapixel for a 4B model (a generous multiple of an H100's ~0.1 s, since a
    ZeroGPU slice is shared and the first call also moves weights), in proportion for larger ones; each
    reference adds tokens the transformer attends to; CFG runs the transformer twice a step; a batch of
    n images is n times the work (one call saves launches, not arithmetic); 10 s covers text encoding and the VAE.
    """
    megapixels = job.width * job.height / 1e6
    work = job.denoising_steps * megapixels * (1 + 0.5 * len(job.images)) * job.model_scale * (2 if job.cfg else 1)
    work *= job.num_images
    return 10 + 1.5 * work


def check_gpu_time(job: Job) -> None:
    """Refuse, before it starts, a job ZeroGPU would stop mid-run: its estimate is over the cap."""
    needed = estimated_gpu_seconds(job)
    if needed > GPU_SECONDS_CAP:
        raise InvalidRequest(
            "steps", f"this job needs about {needed:.0f} s of ZeroGPU time and a call may reserve at most "
            f"{GPU_SECONDS_CAP} s: lower the steps ({job.steps}), the size ({job.width}x{job.height})"
            + (f", the number of reference images ({len(job.images)})" if job.images else "")
            + (f", the number of images ({job.num_images})" if job.num_images > 1 else "")
            + (" or the guidance to 1 (no CFG, half the work)" if job.cfg else ""))


def gpu_seconds(job: Job, progress: ProgressCallback | None = None) -> int:
    """ZeroGPU time to reserve (spaces.GPU's duration callable): the estimate, at most the cap. The
    engine refuses a job whose estimate is over the cap before it starts."""
    return int(min(GPU_SECONDS_CAP, estimated_gpu_seconds(job)))


@spaces.GPU(duration=gpu_seconds)
@torch.inference_mode()
def run_job(job: Job, progress: ProgressCallback | None = None) -> tuple[list[Image.Image], dict[str, float]]:
    """Run the pipeline for one job, timing its stages (milliseconds): its images, one per seed.

    A batch is one pipeline call of batch size n (the prompt encoded once, one generator per image so
    each image's noise is its seed's alone); when that runs out of GPU memory, one call per image.
    Under inference_mode: with autograd on, a cached prompt embedding would keep the text
    encoder's activations alive (about 47 MiB a prompt on the tiny model).
    """
    model = cached_model(job.model_key)
    pipe = model.pipe
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    adapters = adapters_for(pipe)
    adapters.apply(pipe, job.loras)
    if job.loras or len(adapters):  # making the job's adapters active, or turning loaded ones off
        timings["lora"] = ms_since(t0, model.device)

    t0 = time.perf_counter()
    prompt_embeds = encode_prompt_cached(model, job.prompt)
    # The empty prompt's embedding, encoded once and cached like any prompt (the pipeline would
    # encode it again on every call, inside the denoising time).
    negative_embeds = encode_prompt_cached(model, "") if job.cfg else None
    timings["text_encode"] = ms_since(t0, model.device)

    embeds = (prompt_embeds, negative_embeds)
    try:
        images = _generate(model, job, job.seeds, embeds, timings, _Progress(progress, job.denoising_steps))
    except torch.OutOfMemoryError:
        if job.num_images == 1:
            raise
        log.warning("a batch of %d at %dx%d ran out of GPU memory; generating its images one at a time",
                    job.num_images, job.width, job.height)
        _free_gpu_memory()
        timings.pop("denoise", None)
        batch_progress = _Progress(progress, job.denoising_steps * job.num_images)
        images = []
        for index, seed in enumerate(job.seeds):
            batch_progress.offset = index * job.denoising_steps
            images += _generate(model, job, [seed], embeds, timings, batch_progress)
    if job.mask is not None:
        t0 = time.perf_counter()
        images = [composite(job.images[0], image, job.mask) for image in images]
        timings["composite"] = ms_since(t0)
    return images, timings


class _Progress:
    """The pipeline's step callback: reports step `offset + step` of `total` (a batch run one image at a
    time counts its steps across the batch)."""

    def __init__(self, progress: ProgressCallback | None, total: int):
        self.progress, self.total, self.offset = progress, total, 0

    def __call__(self, _pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        if self.progress is not None:
            self.progress(self.offset + step + 1, self.total)
        return callback_kwargs


def _generate(model: LoadedModel, job: Job, seeds: list[int], embeds: tuple, timings: dict[str, float],
              on_step_end: _Progress) -> list[Image.Image]:
    """One pipeline call for `seeds` (batch size len(seeds)), then the VAE decode; adds to `timings`."""
    pipe = model.pipe
    prompt_embeds, negative_embeds = embeds
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    t0 = time.perf_counter()
    call = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, height=job.height,
                width=job.width, num_inference_steps=job.steps, guidance_scale=job.guidance,
                generator=generators if len(seeds) > 1 else generators[0], num_images_per_prompt=len(seeds),
                output_type="latent", callback_on_step_end=on_step_end)
    if job.mask is not None:
        latents = run_inpaint(model, job, call)
    else:
        latents = pipe(image=list(job.images) or None, **call).images
    _add(timings, "denoise", ms_since(t0, model.device))

    t0 = time.perf_counter()
    # One image at a time: a batched decode holds n full-size activations at once (the peak at 2k) and
    # measured no faster per image (docs/BENCHMARKS.md#batches); alone, each decode is the single image's.
    images = []
    for latent in latents.to(pipe.vae.dtype).split(1):
        decoded = pipe.vae.decode(latent, return_dict=False)[0]
        images += pipe.image_processor.postprocess(decoded, output_type="pil")
    _add(timings, "vae_decode", ms_since(t0, model.device))
    return images


def _add(timings: dict[str, float], stage: str, ms: float) -> None:
    timings[stage] = round(timings.get(stage, 0.0) + ms, 2)


def _free_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_prompt_cached(model: LoadedModel, prompt: str) -> torch.Tensor:
    """The prompt's embeddings, from the cache when this model has seen the prompt before.

    Passing cached embeddings back to the pipeline gives bit-identical images (DESIGN.md). An adapter
    active on the text encoder changes the embedding, so the key names those adapters too.
    """
    key = prompt_key(prompt, text_encoder_adapters(model.pipe))
    embeds = model.prompt_cache.get(key)
    if embeds is None:
        with torch.inference_mode():
            embeds, _ = model.pipe.encode_prompt(prompt=prompt, device=model.pipe._execution_device)
        # A copy of its own (a slice would keep the whole stack of hidden states it was cut from), in
        # host memory when the model offloads: there GPU memory is what is short.
        embeds = embeds.detach().to(model.cache_device, copy=True)
        model.prompt_cache.put(key, embeds)
    return embeds.to(model.pipe._execution_device)


def ms_since(t0: float, device: str = "cpu") -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return round((time.perf_counter() - t0) * 1000, 2)
