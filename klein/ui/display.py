"""What the UI shows in words: the generation info, the model banner, the aspect-ratio menu (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import presets

if TYPE_CHECKING:
    from ..generation.engine import Engine, GenerationBatch, GenerationResult

TINY_NOTICE = (
    "**The active model is the tiny random-weight model: its images are noise, not pictures.** "
    "It exists to try and test the app without downloading weights; start with `--model flux2-klein-4b` on a GPU."
)
# The menu's words for each preset key; the API and the page send the key.
PRESET_NAMES = {
    "square_1_1": "Square 1:1", "widescreen_16_9": "Widescreen 16:9", "social_story_9_16": "Social story 9:16",
    "portrait_2_3": "Portrait 2:3", "traditional_3_4": "Traditional 3:4", "vertical_1_2": "Vertical 1:2",
    "horizontal_2_1": "Horizontal 2:1", "social_post_4_5": "Social post 4:5", "standard_3_2": "Standard 3:2",
    "classic_4_3": "Classic 4:3", "square": "Square", "landscape": "Landscape", "portrait": "Portrait",
    "photo": "Photo", "photo_v": "Photo, vertical", "standard": "Standard", "standard_v": "Standard, vertical",
    "wide": "Wide",
}
MATCH_INPUT_LABEL = "Match the input's aspect"


def aspect_choices(resolution: str, with_match_input: bool) -> list[tuple[str, str]]:
    """(label, key) pairs for the aspect-ratio menu, each label with the size it gives at `resolution`."""
    if resolution not in presets.RESOLUTIONS:
        resolution = "1k"
    choices = [(f"{PRESET_NAMES.get(key, key)} · {w}×{h}", key)
               for key in presets.ASPECT_PRESETS for w, h in [presets.size_for_preset(key, resolution)]]
    return [(MATCH_INPUT_LABEL, presets.MATCH_INPUT), *choices] if with_match_input else choices


def api_info(result: GenerationResult) -> dict[str, Any]:
    """The generation's fields for API and MCP callers: plain data, no formatting.

    Each LoRA is {"name", "scale"} here, not the request's {"path", "scale"}: gradio_client takes any
    output dict with a "path" for a file to download, and fails on it.
    """
    info = {**result.info(), "timings_ms": {name: round(ms, 1) for name, ms in result.timings_ms.items()}}
    if "loras" in info:
        info["loras"] = [{"name": lora["path"], "scale": lora["scale"]} for lora in info["loras"]]
    return info


def batch_info(batch: GenerationBatch) -> dict[str, Any]:
    """api_info() of the batch's first image, with every image's seed and the seeds moderation left out."""
    return api_info(batch.results[0]) | batch.info()


def moderated_note(seeds: list[int]) -> str:
    """The words for the images moderation left out of a batch."""
    if not seeds:
        return ""
    return f"Left out by moderation: seed{'s' if len(seeds) > 1 else ''} {', '.join(str(seed) for seed in seeds)}."


def format_info(info: dict[str, Any] | None) -> str:
    """The page's Markdown line for the fields of api_info()."""
    if not info:
        return ""
    t = info.get("timings_ms") or {}
    stages = ", ".join(f"{name.replace('_', ' ')} {t[name]:.0f} ms" for name in t if name != "total")
    return (
        f"**{info['width']}×{info['height']}** · seed `{info['seed']}` · {info['model']} · {info['steps']} steps · "
        f"{str(info['workflow']).replace('_', ' ')} · {info['output_format']}"
        + (f" · {info['worker']}" if info.get("worker") else "")
        + "".join(f" · LoRA {lora['name']} ×{lora['scale']:g}" for lora in info.get("loras") or ()) + "  \n"
        f"{t.get('total', 0):.0f} ms ({stages})" + batch_line(info)
    )


def batch_line(info: dict[str, Any]) -> str:
    """The info line's batch part: its seeds (when more than one image) and those moderation left out."""
    seeds, moderated = info.get("seeds") or [], info.get("moderated_seeds") or []
    words = [f"{len(seeds)} images: seeds {', '.join(str(s) for s in seeds)}"] if len(seeds) > 1 else []
    words += [f"**{moderated_note(moderated)}**"] if moderated else []
    return "  \n" + " · ".join(words) if words else ""


def model_banner(engine: Engine) -> str:
    model = engine.model
    text = f"Model **{model.spec.name}** on {model.device} ({str(model.dtype).removeprefix('torch.')})"
    if engine.model_reason:
        text += f" — {engine.model_reason}"
    offload = getattr(model, "offload", "none")  # a worker-backed front has no pipeline of its own
    if offload != "none":
        text += f"; offload **{offload}** ({model.offload_reason})"
    return text + ("\n\n" + TINY_NOTICE if model.is_tiny else "")
