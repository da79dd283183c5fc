"""What the UI shows in words: the generation info line and the model banner (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..generation.engine import Engine, GenerationResult

TINY_NOTICE = (
    "**The active model is the tiny random-weight model: its images are noise, not pictures.** "
    "It exists to try and test the app without downloading weights; start with `--model flux2-klein-4b` on a GPU."
)


def format_info(result: GenerationResult) -> str:
    t = result.timings_ms
    stages = ", ".join(f"{name.replace('_', ' ')} {t[name]:.0f} ms" for name in t if name != "total")
    return (
        f"**{result.width}×{result.height}** · seed `{result.seed}` · {result.model} · {result.steps} steps · "
        f"{result.workflow.value.replace('_', ' ')} · {result.output_format}"
        + (f" · {result.worker}" if result.worker else "") + "  \n"
        f"{t.get('total', 0):.0f} ms ({stages})"
    )


def model_banner(engine: Engine) -> str:
    model = engine.model
    text = f"Model **{model.spec.name}** on {model.device} ({str(model.dtype).removeprefix('torch.')})"
    if engine.model_reason:
        text += f" — {engine.model_reason}"
    offload = getattr(model, "offload", "none")  # a worker-backed front has no pipeline of its own
    if offload != "none":
        text += f"; offload **{offload}** ({model.offload_reason})"
    return text + ("\n\n" + TINY_NOTICE if model.is_tiny else "")
