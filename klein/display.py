"""What the UI shows in words: the generation info line, the model banner and the API's shared
parameter descriptions (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine, GenerationResult

TINY_NOTICE = (
    "**The active model is the tiny random-weight model: its images are noise, not pictures.** "
    "It exists to try and test the app without downloading weights; start with `--model flux2-klein-4b` on a GPU."
)


def format_info(result: GenerationResult) -> str:
    t = result.timings_ms
    stages = ", ".join(f"{name.replace('_', ' ')} {t[name]:.0f} ms" for name in t if name != "total")
    return (
        f"**{result.width}×{result.height}** · seed `{result.seed}` · {result.model} · {result.steps} steps · "
        f"{result.workflow.value.replace('_', ' ')} · {result.output_format}  \n"
        f"{t.get('total', 0):.0f} ms ({stages})"
    )


def model_banner(engine: Engine) -> str:
    model = engine.model
    text = f"Model **{model.spec.name}** on {model.device} ({str(model.dtype).removeprefix('torch.')})"
    if engine.model_reason:
        text += f" — {engine.model_reason}"
    return text + ("\n\n" + TINY_NOTICE if model.is_tiny else "")


# The Args every endpoint shares; Gradio reads them from the docstrings for the API and MCP pages.
COMMON_ARGS_DOC = """\
            resolution: "1k" (about 1 megapixel) or "2k" (about 4 megapixels, longer side at most 2048).
            seed: the seed to use when randomize_seed is false (0..4294967295).
            randomize_seed: pick a random seed; the seed used is returned either way.
            output_format: "jpeg" (default, fastest), "png" or "webp".
            custom_size: use width and height instead of the preset.
            width: custom width in pixels, a multiple of 16 in 64..2048.
            height: custom height in pixels, a multiple of 16 in 64..2048.
            steps: denoising steps (the model's default: 4 for distilled models, 50 for base models).
            guidance: guidance scale, used by base models only.
            safety_tolerance: 0 (strictest) to 5 (most permissive), default 2; moderates the prompt, the
                reference images and the result.
"""
