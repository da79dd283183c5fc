"""The engine: GenerationRequest -> GenerationResult, the same for the UI, Gradio's API and REST.

It knows nothing of Gradio or HTTP. The workflow follows the number of reference images; the seed is
chosen here when the request has none and is always returned.
"""

from __future__ import annotations

import spaces  # noqa: I001 - on ZeroGPU Spaces this must be imported before torch touches CUDA

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from . import presets
from .config import Settings, choose_model, on_zero_gpu
from .encode import MIME_TYPES, delete_older_than, encode_image, temporary_folder, write_image
from .errors import GenerationCancelled, GenerationError, GenerationTimeout, InvalidRequest, KleinError
from .pipeline import LoadedModel, SpeedUps, cached_model, load_model
from .prompt_cache import PromptCache
from .request import GenerationRequest, Workflow
from .safety import Moderator, moderator_from_env

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
OUTPUT_TTL = 24 * 3600  # seconds a result stays in a temporary output folder
SWEEP_EVERY = 600
MAX_SEQUENCE_LENGTH = 512  # what Flux2KleinPipeline reads of a prompt, chat template included
# One prompt-embedding cache per loaded model; module-level so a ZeroGPU worker (a fork) has it too.
_prompt_caches: dict[tuple[str, str, str], PromptCache] = {}


@dataclass
class GenerationResult:
    """One generated image, encoded once, and everything needed to reproduce it."""

    image: Image.Image
    data: bytes
    path: Path | None  # None when the caller keeps the bytes itself (REST)
    seed: int
    width: int
    height: int
    model: str
    workflow: Workflow
    steps: int
    guidance: float
    output_format: str
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.output_format]

    def info(self) -> dict:
        """The generation parameters, as embedded in the file and shown to the user."""
        return {
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "workflow": self.workflow.value,
            "steps": self.steps,
            "guidance": self.guidance,
            "output_format": self.output_format,
            "timings_ms": self.timings_ms,
        }


@dataclass(frozen=True)
class _Job:
    """What one pipeline call needs; plain data, so ZeroGPU can pickle it into its GPU worker."""

    model_key: tuple[str, str, str]
    prompt: str
    images: tuple[Image.Image, ...]
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    model_scale: float = 1.0  # the transformer's size relative to the 4B model's, for ZeroGPU durations


class Engine:
    """Turns requests into images with one cached pipeline, one generation at a time."""

    def __init__(self, model: LoadedModel, settings: Settings | None = None, model_reason: str = "",
                 moderator: Moderator | None = None):
        self.model = model
        self.settings = settings or Settings()
        self.model_reason = model_reason
        self.moderator = moderator if moderator is not None else moderator_from_env()
        self.output_dir = self.settings.output_dir or temporary_folder("klein-studio-")
        self._outputs_swept = time.monotonic()
        self._lane = threading.Lock()
        _prompt_caches[model.key] = PromptCache(self.settings.prompt_cache_mb * 1024 * 1024)
        self._template_tokens = self.count_prompt_tokens("")
        self._model_scale = max(1.0, sum(p.numel() for p in model.pipe.transformer.parameters()) / FOUR_B_PARAMETERS)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Engine":
        """Choose the model (resolving `auto`), load it once and build the engine."""
        name, reason = choose_model(settings.model, torch.cuda.is_available(), on_zero_gpu())
        log.info("model %s: %s", name, reason)
        device = settings.device or ("cuda" if on_zero_gpu() else None)
        speed_ups = SpeedUps(settings.compile, settings.fuse_qkv, settings.attention_backend)
        model = load_model(name, settings.cache_dir, device, settings.dtype, speed_ups)
        return cls(model, settings, reason)

    @property
    def limits(self):
        return self.settings.limits

    @property
    def prompt_token_limit(self) -> int:
        """How many tokens of prompt the model reads, once its chat template is counted."""
        return MAX_SEQUENCE_LENGTH - self._template_tokens

    def count_prompt_tokens(self, prompt: str) -> int:
        tokenizer = self.model.pipe.tokenizer
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        return len(tokenizer(text)["input_ids"])

    def generate(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        *,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        keep_file: bool = True,
    ) -> GenerationResult:
        """Generate one image for a validated request.

        1. check what depends on the model (prompt length);
        2. moderate the request: prompt and reference images ("Request moderated");
        3. choose the seed, size, steps and guidance;
        4. run the pipeline (one at a time), stopping between steps if `cancel` is set or the
           `deadline` (a time.monotonic() value) passes;
        5. moderate the generated image ("Content moderated") before anything is kept;
        6. encode once, with the parameters embedded, and write the file (unless `keep_file` is False:
           the REST API answers with the bytes and keeps task results in its own folder).
        """
        started = time.perf_counter()
        # 1. Model-dependent checks
        self._check_prompt_length(request.prompt)
        # 2. Request moderation
        t0 = time.perf_counter()
        tolerance = self._moderate_request(request)
        safety_ms = _ms_since(t0)
        # 3. Parameters
        job = self._job_for(request)
        # 4. Pipeline
        stop = _StopCheck(cancel, deadline)
        if not self._lane.acquire(timeout=stop.seconds_left()):
            raise GenerationTimeout("Waited for the GPU longer than the time limit; try again later.")
        try:
            stop()  # cancelled while waiting, or the deadline passed just now
            image, timings = self._run(job, _StepHook(progress, stop))
        finally:
            self._lane.release()
        # 5. Content moderation
        t0 = time.perf_counter()
        self.moderator.check_output(image, tolerance)
        timings["safety"] = round(safety_ms + _ms_since(t0), 2)
        # 6. Encode
        t0 = time.perf_counter()
        meta = {
            "prompt": request.prompt,
            "seed": job.seed,
            "model": self.model.spec.name,
            "width": job.width,
            "height": job.height,
            "steps": job.steps,
            "guidance": job.guidance,
            "workflow": request.workflow.value,
            "references": len(request.images),
            "aspect_ratio": request.aspect_ratio,
            "resolution": request.resolution,
            "custom_size": request.width is not None,
            "safety_tolerance": tolerance,
        }
        data = encode_image(image, request.output_format, meta)
        path = None
        if keep_file:
            path = write_image(data, request.output_format, self.output_dir, stem=f"klein-{job.seed}")
            self._sweep_outputs()
        timings["encode"] = _ms_since(t0)
        timings["total"] = _ms_since(started)
        return GenerationResult(
            image=image,
            data=data,
            path=path,
            seed=job.seed,
            width=image.width,
            height=image.height,
            model=self.model.spec.name,
            workflow=request.workflow,
            steps=job.steps,
            guidance=job.guidance,
            output_format=request.output_format,
            timings_ms=timings,
        )

    def check_request(self, request: GenerationRequest) -> int:
        """Everything that can refuse a request before generating: the prompt's length, then moderation
        of the prompt and reference images ("Request moderated"). Returns the tolerance applied.

        Adapters that keep a request for later (the REST task queue) call this first, so nothing
        refused is ever stored.
        """
        self._check_prompt_length(request.prompt)
        return self._moderate_request(request)

    def _sweep_outputs(self) -> None:
        """Delete results older than OUTPUT_TTL from a temporary output folder, at most every few minutes.

        A folder given with --output-dir is the user's and is never swept.
        """
        now = time.monotonic()
        if self.settings.output_dir is not None or now - self._outputs_swept < SWEEP_EVERY:
            return
        self._outputs_swept = now
        delete_older_than(self.output_dir, OUTPUT_TTL)

    def _moderate_request(self, request: GenerationRequest) -> int:
        tolerance = self.moderator.effective_tolerance(request.safety_tolerance)
        self.moderator.check_prompt(request.prompt, tolerance)
        for index, image in enumerate(request.images):
            field = "image" if len(request.images) == 1 else f"images[{index}]"
            self.moderator.check_reference(image, tolerance, field)
        return tolerance

    def _check_prompt_length(self, prompt: str) -> None:
        tokens = self.count_prompt_tokens(prompt) - self._template_tokens
        if tokens > self.prompt_token_limit:
            raise InvalidRequest(
                "prompt",
                f"is {tokens} tokens long; {self.model.spec.name} reads at most {self.prompt_token_limit} tokens "
                f"of prompt ({len(prompt)} characters given). Shorten it.",
            )

    def _job_for(self, request: GenerationRequest) -> _Job:
        width, height = request.output_size()
        spec = self.model.spec
        return _Job(
            model_key=self.model.key,
            prompt=request.prompt,
            images=request.images,
            width=width,
            height=height,
            steps=request.steps if request.steps is not None else spec.steps,
            guidance=float(request.guidance if request.guidance is not None else spec.guidance),
            seed=request.seed if request.seed is not None else presets.random_seed(),
            model_scale=self._model_scale,
        )

    def _run(self, job: _Job, on_step: ProgressCallback) -> tuple[Image.Image, dict[str, float]]:
        try:
            # Callbacks do not pickle into a ZeroGPU worker: there the UI shows no step progress, and
            # Cancel or the deadline stop a job only before it reaches the GPU.
            return run_job(job, None if on_zero_gpu() else on_step)
        except KleinError:
            raise
        except torch.OutOfMemoryError:
            _free_memory()
            raise GenerationError(
                f"Out of memory generating {job.width}x{job.height}; try a smaller size or fewer reference images."
            ) from None
        except Exception as exc:
            log.exception("generation failed")
            raise GenerationError(f"Generation failed ({type(exc).__name__}); the server log has the details.") from exc


class _StopCheck:
    """Raises when the request was cancelled or ran out of time; called between denoising steps."""

    def __init__(self, cancel: threading.Event | None, deadline: float | None):
        self.cancel, self.deadline = cancel, deadline

    def seconds_left(self) -> float:
        """For Lock.acquire(timeout=...): -1 waits for ever."""
        return -1 if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def __call__(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise GenerationCancelled("Generation cancelled.")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise GenerationTimeout("Generation took longer than the time limit and was stopped.")


class _StepHook:
    """Called after each denoising step: stop if asked to, then report progress."""

    def __init__(self, progress: ProgressCallback | None, stop: _StopCheck):
        self.progress, self.stop = progress, stop

    def __call__(self, step: int, total: int) -> None:
        self.stop()
        if self.progress is not None:
            self.progress(step, total)


GPU_SECONDS_CAP = 120  # ZeroGPU refuses longer reservations for most accounts
FOUR_B_PARAMETERS = 3.88e9  # flux2-klein-4b's transformer (bench/gpu.py checks the count)


def _gpu_seconds(job: _Job, progress: ProgressCallback | None = None) -> int:
    """ZeroGPU time to reserve: grows with pixels, steps, reference count and model size.

    About 1.5 s per step-megapixel for a 4B model (a generous multiple of an H100's ~0.1 s, since a
    ZeroGPU slice is shared and the first call also moves weights), in proportion for larger ones; each reference
    adds tokens the transformer attends to; 10 s covers text encoding and the VAE.
    """
    megapixels = job.width * job.height / 1e6
    work = job.steps * megapixels * (1 + 0.5 * len(job.images)) * job.model_scale
    return int(min(GPU_SECONDS_CAP, 10 + 1.5 * work))


@spaces.GPU(duration=_gpu_seconds)
def run_job(job: _Job, progress: ProgressCallback | None = None) -> tuple[Image.Image, dict[str, float]]:
    """Run the pipeline for one job, timing its stages (milliseconds)."""
    model = cached_model(job.model_key)
    pipe = model.pipe
    timings: dict[str, float] = {}
    generator = torch.Generator(device="cpu").manual_seed(job.seed)

    t0 = time.perf_counter()
    prompt_embeds = encode_prompt_cached(model, job.prompt)
    timings["text_encode"] = _ms_since(t0, model.device)

    def on_step_end(_pipe, step: int, _timestep, callback_kwargs: dict) -> dict:
        if progress is not None:
            progress(step + 1, job.steps)
        return callback_kwargs

    t0 = time.perf_counter()
    latents = pipe(
        image=list(job.images) or None,
        prompt_embeds=prompt_embeds,
        height=job.height,
        width=job.width,
        num_inference_steps=job.steps,
        guidance_scale=job.guidance,
        generator=generator,
        output_type="latent",
        callback_on_step_end=on_step_end,
    ).images
    timings["denoise"] = _ms_since(t0, model.device)

    t0 = time.perf_counter()
    with torch.no_grad():
        decoded = pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]
    image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
    timings["vae_decode"] = _ms_since(t0, model.device)
    return image, timings


def encode_prompt_cached(model: LoadedModel, prompt: str) -> torch.Tensor:
    """The prompt's embeddings, from the cache when this model has seen the prompt before.

    Passing cached embeddings back to the pipeline gives bit-identical images (DESIGN.md).
    """
    cache = _prompt_caches.get(model.key)
    embeds = cache.get(prompt) if cache is not None else None
    if embeds is None:
        embeds, _ = model.pipe.encode_prompt(prompt=prompt, device=model.pipe._execution_device)
        if cache is not None:
            cache.put(prompt, embeds)
    return embeds


def _ms_since(t0: float, device: str = "cpu") -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return round((time.perf_counter() - t0) * 1000, 2)


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
