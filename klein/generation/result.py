"""What the engine returns: each image, encoded once, with what reproduces it; a batch of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..output.encode import MIME_TYPES
from ..request import Workflow


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
