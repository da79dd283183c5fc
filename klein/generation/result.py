"""What the engine returns: each image, encoded once, with what reproduces it; a batch of them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ..output.encode import MIME_TYPES
from ..request import GenerationRequest, Workflow


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
    loras: list[dict] = field(default_factory=list)  # [{"path", "scale"}]: the LoRAs applied (scale 0 left out)
    worker: str | None = None  # the Ray Serve worker that made it (docs/workers.md); None in one process
    enhanced_prompt: str | None = None  # the rewrite generated from, when enhance_prompt was asked for

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
            **({"loras": self.loras} if self.loras else {}),
            **({"worker": self.worker} if self.worker else {}),
            **({"enhanced_prompt": self.enhanced_prompt} if self.enhanced_prompt is not None else {}),
        }


@dataclass
class GenerationBatch:
    """The images of one request, in seed order, and the seeds of any that moderation left out."""

    results: list[GenerationResult]
    moderated: list[int] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [result.seed for result in self.results]

    def info(self) -> dict:
        """What the APIs report beside the images: each image's seed, and the seeds left out."""
        return {"seeds": self.seeds, "moderated_seeds": self.moderated}


class OneImageCall:
    """generate(), the one-image call, for an engine that has generate_batch (Engine, WorkerEngine)."""

    def generate(self, request: GenerationRequest, progress: Callable[[int, int], None] | None = None, *,
                 cancel: threading.Event | None = None, deadline: float | None = None,
                 keep_file: bool = True) -> GenerationResult:
        """Generate the one image of a request (num_images 1); generate_batch says how."""
        if request.num_images != 1:
            raise ValueError(f"generate() makes one image; use generate_batch() for num_images={request.num_images}")
        return self.generate_batch(request, progress, cancel=cancel, deadline=deadline, keep_file=keep_file).results[0]
