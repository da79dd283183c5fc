"""The engine: GenerationRequest -> GenerationBatch of GenerationResults, the same for the UI, Gradio's API and REST.

It knows nothing of Gradio or HTTP. The workflow follows the number of reference images; the seed is
chosen here when the request has none and is always returned.
"""

from __future__ import annotations

# isort: off
import spaces  # noqa: F401 - on ZeroGPU Spaces it must be imported before torch touches CUDA
# isort: on

import contextlib
import dataclasses
import logging
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from .. import presets
from ..config import Settings, choose_model, on_zero_gpu
from ..errors import (
    ContentModerated,
    GenerationCancelled,
    GenerationError,
    GenerationTimeout,
    InvalidRequest,
    KleinError,
    ModelLoadError,
)
from ..output.encode import encode_image
from ..output.files import OutputFolder
from ..request import GenerationRequest, Workflow
from ..safety.policy import Moderator
from .adapters import adapters_for
from .enhance import MAX_NEW_TOKENS, enhance_prompt
from .inpaint import check_strength, generation_size
from .job import Job, ProgressCallback, check_gpu_time, ms_since, run_job
from .loras import LoraLibrary
from .pipeline import LoadedModel, SpeedUps, first_line, load_model
from .prompt_cache import PromptCache
from .result import GenerationBatch, GenerationResult, OneImageCall

__all__ = ["Engine", "GenerationBatch", "GenerationResult"]

log = logging.getLogger(__name__)

MAX_SEQUENCE_LENGTH = 512  # what Flux2KleinPipeline reads of a prompt, chat template included
FOUR_B_PARAMETERS = 3.88e9  # flux2-klein-4b's transformer (bench/gpu.py checks the count)


class Engine(OneImageCall):
    """Turns requests into images with one cached pipeline, one generation at a time."""

    def __init__(self, model: LoadedModel, settings: Settings | None = None, model_reason: str = "",
                 moderator: Moderator | None = None):
        self.model = model
        self.settings = settings or Settings()
        self.model_reason = model_reason
        self.moderator = moderator if moderator is not None else Moderator(
            self.settings.max_safety_tolerance, self.settings.image_moderation)
        self.outputs = OutputFolder(self.settings.output_dir)
        self.enhance_max_tokens = MAX_NEW_TOKENS
        self._lane = threading.Lock()
        # What requests may name; adapters load inside the lane.
        self.loras = LoraLibrary(self.settings.lora_dir, allow_hub=self.settings.hub_loras)
        adapters_for(model.pipe).max_loaded = self.settings.max_loras_cached
        model.prompt_cache.resize(self.settings.prompt_cache_mb * 1024 * 1024)
        self._template_tokens = self.count_prompt_tokens("")
        self._model_scale = max(1.0, sum(p.numel() for p in model.pipe.transformer.parameters()) / FOUR_B_PARAMETERS)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Engine":
        """Choose the model (resolving `auto`), load it once and build the engine."""
        name, reason = choose_model(settings.model, torch.cuda.is_available(), on_zero_gpu())
        log.info("model %s: %s", name, reason)
        device = settings.device or ("cuda" if on_zero_gpu() else None)
        speed_ups = SpeedUps(settings.compile, settings.fuse_qkv, settings.attention_backend)
        model = load_model(name, settings.cache_dir, device, settings.dtype, speed_ups,
                           offload=settings.offload, vae_tiling=settings.vae_tiling)
        engine = cls(model, settings, reason)
        engine.loras.create_folder()
        if not on_zero_gpu():  # there the GPU attaches per call: nothing to warm, and it would spend quota
            engine.warm_up()
        return engine

    def warm_up(self) -> float:
        """One small generation at start-up (one step, 64x64, not kept): a backend, dtype or compile
        that cannot run here fails now with a message instead of at the first user's request, and
        the first user gets warm timings. Returns its milliseconds."""
        started = time.perf_counter()
        job = self._job_for(GenerationRequest(prompt="warm up", width=64, height=64, steps=1, seed=0))
        try:
            run_job(job, None)
        except Exception as exc:
            speed_ups = (f"attention backend {self.settings.attention_backend or 'default'}, "
                         f"compile {'on' if self.settings.compile else 'off'}")
            raise ModelLoadError(
                f"{self.model.spec.name} loaded but cannot generate on {self.model.device} "
                f"({str(self.model.dtype).removeprefix('torch.')}, {speed_ups}): {first_line(exc)} "
                "Change --device, --dtype, --attention-backend or --compile.") from exc
        elapsed = ms_since(started, self.model.device)
        log.info("warm-up generation: %.0f ms", elapsed)
        return elapsed

    @property
    def limits(self):
        return self.settings.limits

    @property
    def output_dir(self) -> Path:
        return self.outputs.path

    @property
    def prompt_cache(self) -> PromptCache:
        """The loaded model's prompt-embedding cache (sized by --prompt-cache-mb)."""
        return self.model.prompt_cache

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

    def generate_batch(
        self,
        request: GenerationRequest,
        progress: ProgressCallback | None = None,
        *,
        cancel: threading.Event | None = None,
        deadline: float | None = None,
        keep_file: bool = True,
    ) -> GenerationBatch:
        """Generate the request's images (num_images of them, image i with seed + i).

        1. check what depends on the model (prompt length);
        2. moderate the request: prompt and reference images ("Request moderated");
        3. choose the seed, size, steps and guidance;
        4. run the pipeline (one at a time; a batch as one call), stopping between steps if `cancel` is
           set or the `deadline` (a time.monotonic() value) passes: a cancelled batch keeps nothing;
        5. moderate each generated image ("Content moderated"): one refused is left out (its seed in
           `moderated`) and the others kept; when every image is refused, ContentModerated is raised;
        6. encode each once, with its parameters embedded, and write the files (unless `keep_file` is
           False: the REST API answers with the bytes and keeps task results in its own folder).
        """
        started = time.perf_counter()
        # 1. Model-dependent checks
        self._check_prompt_length(request.prompt)
        # 2. Request moderation
        t0 = time.perf_counter()
        tolerance = self._moderate_request(request)
        safety_ms = ms_since(t0)
        # 3. Parameters
        job = self._job_for(request)
        # 4. Pipeline
        stop = _StopCheck(cancel, deadline)
        if not self._lane.acquire(timeout=stop.seconds_left()):
            raise GenerationTimeout("Waited for the GPU longer than the time limit; try again later.")
        try:
            stop()  # cancelled while waiting, or the deadline passed just now
            job, enhance_ms = self._enhance(job, request, tolerance, stop)
            images, timings = self._run(job, _StepHook(progress, stop))
            if request.enhance_prompt:
                timings = {"enhance_prompt": enhance_ms, **timings}
        finally:
            self._lane.release()
        # 5. Content moderation
        t0 = time.perf_counter()
        kept, moderated = self._moderate_outputs(images, job.seeds, tolerance)
        timings["safety"] = round(safety_ms + ms_since(t0), 2)
        # 6. Encode
        t0 = time.perf_counter()
        results = [self._encoded(request, job, seed, image, tolerance, keep_file) for seed, image in kept]
        timings["encode"] = ms_since(t0)
        timings["total"] = ms_since(started)
        for result in results:
            result.timings_ms = timings
        return GenerationBatch(results, moderated)

    def _moderate_outputs(self, images: list[Image.Image], seeds: list[int],
                          tolerance: int) -> tuple[list[tuple[int, Image.Image]], list[int]]:
        """(seed, image) of the images moderation lets through, and the seeds of those it refused; raises
        the first refusal when it refused them all."""
        kept, moderated, refusal = [], [], None
        for seed, image in zip(seeds, images):
            try:
                self.moderator.check_output(image, tolerance)
                kept.append((seed, image))
            except ContentModerated as exc:
                moderated.append(seed)
                refusal = refusal or exc
        if not kept:
            raise refusal
        if moderated:
            log.info("batch: %d of %d images refused by moderation and left out", len(moderated), len(images))
        return kept, moderated

    def _encoded(self, request: GenerationRequest, job: Job, seed: int, image: Image.Image, tolerance: int,
                 keep_file: bool) -> GenerationResult:
        """One image of the job, encoded once with the parameters that reproduce it alone."""
        meta = {
            "prompt": request.prompt,
            "seed": seed,
            "model": self.model.spec.name,
            "width": image.width,
            "height": image.height,
            "steps": job.steps,
            "guidance": job.guidance,
            "workflow": request.workflow.value,
            "references": len(request.images),
            "aspect_ratio": request.aspect_ratio,
            "resolution": request.resolution,
            "custom_size": request.width is not None,
            "safety_tolerance": tolerance,
        }
        if job.loras:
            meta["loras"] = [lora.record() for lora in job.loras]
        if request.enhance_prompt:  # the prompt asked for stays "prompt"; the rewrite generated from beside it
            meta.update(enhance_prompt=True, enhanced_prompt=job.prompt)
        if job.mask is not None:  # the mask itself is not embedded: "Load settings" cannot bring it back
            meta.update(strength=job.strength, references=len(request.images) - 1)
        data = encode_image(image, request.output_format, meta)
        path = self.outputs.write(data, request.output_format, stem=f"klein-{seed}") if keep_file else None
        return GenerationResult(
            image=image,
            data=data,
            path=path,
            seed=seed,
            width=image.width,
            height=image.height,
            model=self.model.spec.name,
            workflow=request.workflow,
            steps=job.steps,
            guidance=job.guidance,
            output_format=request.output_format,
            loras=[lora.record() for lora in job.loras],
            enhanced_prompt=job.prompt if request.enhance_prompt else None,
        )

    def check_request(self, request: GenerationRequest) -> int:
        """Everything that can refuse a request before generating: the prompt's length, then moderation
        of the prompt and reference images ("Request moderated"). Returns the tolerance applied.

        Adapters that keep a request for later (the REST task queue) call this first, so nothing
        refused is ever stored.
        """
        self._check_prompt_length(request.prompt)
        self._job_for(request)  # what the job would need (ZeroGPU time) is known now, too
        return self._moderate_request(request)

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

    def _enhance(self, job: Job, request: GenerationRequest, tolerance: int, stop: "_StopCheck") -> tuple[Job, float]:
        """The job with its prompt rewritten by the text encoder, when asked; the rewrite is moderated
        like any prompt. Runs in the lane: it uses the model. Cancel and the deadline stop it between tokens
        (not on ZeroGPU, where no callback reaches the worker)."""
        if not request.enhance_prompt:
            return job, 0.0
        t0 = time.perf_counter()
        editing = request.workflow is not Workflow.TEXT_TO_IMAGE
        with self._mapped_errors("Prompt enhancement failed"):
            rewrite = enhance_prompt(self.model.key, request.prompt, job.seed, editing, self.enhance_max_tokens,
                                     None if on_zero_gpu() else stop)
        self.moderator.check_prompt(rewrite, tolerance)
        return dataclasses.replace(job, prompt=rewrite), ms_since(t0, self.model.device)

    def _job_for(self, request: GenerationRequest) -> Job:
        width, height = request.output_size()
        if request.mask is not None:
            width, height = generation_size((width, height))
        spec = self.model.spec
        guidance = float(request.guidance if request.guidance is not None else spec.guidance)
        job = Job(
            model_key=self.model.key,
            prompt=request.prompt,
            images=request.images,
            width=width,
            height=height,
            steps=request.steps if request.steps is not None else spec.steps,
            guidance=guidance,
            seed=request.seed if request.seed is not None else presets.random_seed(),
            model_scale=self._model_scale,
            cfg=not spec.distilled and guidance > 1.0,
            loras=self.loras.resolve(request.loras, self.model.pipe.transformer),  # found here, before the lane
            mask=request.mask,
            strength=float(request.strength),
            num_images=request.num_images,
        )
        if job.mask is not None:
            check_strength(job.steps, job.strength)
        if on_zero_gpu():
            check_gpu_time(job)
        return job

    def _run(self, job: Job, on_step: ProgressCallback) -> tuple[list[Image.Image], dict[str, float]]:
        out_of_memory = (f"Out of memory generating {job.width}x{job.height}; try a smaller size or fewer "
                         "reference images" + (" or images" if job.num_images > 1 else "") + ".")
        with self._mapped_errors("Generation failed", out_of_memory):
            # Callbacks do not pickle into a ZeroGPU worker: there the UI shows no step progress, and
            # Cancel or the deadline stop a job only before it reaches the GPU.
            return run_job(job, None if on_zero_gpu() else on_step)

    @contextlib.contextmanager
    def _mapped_errors(self, failed: str, out_of_memory: str = "Out of memory; try again with a smaller request."):
        """A KleinError passes; out of memory frees the cache and says what to lower; anything else is logged
        and becomes a GenerationError without internals."""
        try:
            yield
        except KleinError:
            raise
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise GenerationError(out_of_memory) from None
        except Exception as exc:
            log.exception("%s", failed)
            raise GenerationError(f"{failed} ({type(exc).__name__}); the server log has the details.") from exc


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
