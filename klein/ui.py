"""The Gradio app: build_demo(engine) -> gr.Blocks. The only module that imports gradio.

Three tabs, each a named API endpoint (text_to_image, edit, multi_reference) over the same engine.
Event functions turn engine errors into gr.Error; their docstrings are the API and MCP descriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import gradio as gr

from . import presets
from .engine import Engine, GenerationResult
from .errors import InvalidRequest, KleinError
from .images import load_reference
from .request import OUTPUT_FORMATS, GenerationRequest

log = logging.getLogger(__name__)

GPU_LANE = "gpu"  # every generating event shares it, so two tabs never run the model at once
RESOLUTION_CHOICES = list(presets.RESOLUTIONS)
PRESET_CHOICES = list(presets.ASPECT_PRESETS)
TINY_NOTICE = (
    "**The active model is the tiny random-weight model: its images are noise, not pictures.** "
    "It exists to try and test the app without downloading weights; start with `--model flux2-klein-4b` on a GPU."
)


@contextmanager
def user_errors():
    """Show engine errors as a toast naming the field; never show a traceback."""
    try:
        yield
    except KleinError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except gr.Error:
        raise
    except Exception:
        log.exception("unexpected error in a UI event")
        raise gr.Error("Something went wrong on the server; the log has the details.", print_exception=False) from None


def seed_from(seed: float | int | None, randomize_seed: bool) -> int | None:
    """None (random) when randomize_seed is on, else the seed as an int (validated by the request)."""
    if randomize_seed:
        return None
    if seed is None or (isinstance(seed, float) and not seed.is_integer()):
        raise InvalidRequest("seed", f"must be a whole number in 0..{presets.SEED_MAX}, got {seed!r}")
    return int(seed)


def gallery_paths(images: Sequence[Any] | None) -> list[Any]:
    """Gallery values arrive as (path, caption) pairs; keep the paths."""
    return [item[0] if isinstance(item, (tuple, list)) else item for item in images or []]


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


def build_demo(engine: Engine) -> gr.Blocks:
    """The Klein Studio Blocks app over `engine`."""
    spec = engine.model.spec
    limits = engine.limits

    def run(prompt, images, aspect_ratio, resolution, seed, randomize_seed, output_format,
            custom_size, width, height, steps, guidance, progress) -> tuple[str, int, str]:
        request = GenerationRequest(
            prompt=prompt,
            images=tuple(images),
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            seed=seed_from(seed, randomize_seed),
            width=int(width) if custom_size else None,
            height=int(height) if custom_size else None,
            steps=int(steps) if steps is not None else None,
            guidance=float(guidance) if guidance is not None and not spec.distilled else None,
            output_format=output_format,
            limits=limits,
        )
        progress(0, desc="Starting")
        result = engine.generate(request, progress=lambda step, total: progress((step, total), unit="steps"))
        return str(result.path), result.seed, format_info(result)

    def text_to_image(
        prompt: str,
        aspect_ratio: str = "square_1_1",
        resolution: str = "1k",
        seed: float = 0,
        randomize_seed: bool = True,
        output_format: str = "jpeg",
        custom_size: bool = False,
        width: float = 1024,
        height: float = 1024,
        steps: float = spec.steps,
        guidance: float = spec.guidance,
        progress=gr.Progress(),
    ) -> tuple[str, int, str]:
        """Generate an image from a text prompt with FLUX.2 [klein].

        Args:
            prompt: what the image should show.
            aspect_ratio: a preset such as square_1_1, widescreen_16_9, landscape or portrait.
            resolution: "1k" (about 1 megapixel) or "2k" (about 4 megapixels, longer side at most 2048).
            seed: the seed to use when randomize_seed is false (0..4294967295).
            randomize_seed: pick a random seed; the seed used is returned either way.
            output_format: "jpeg" (default, fastest), "png" or "webp".
            custom_size: use width and height instead of the preset.
            width: custom width in pixels, a multiple of 16 in 64..2048.
            height: custom height in pixels, a multiple of 16 in 64..2048.
            steps: denoising steps (the model's default: 4 for distilled models, 50 for base models).
            guidance: guidance scale, used by base models only.

        Returns:
            The image file, the seed used, and a line describing the generation.
        """
        with user_errors():
            return run(prompt, (), aspect_ratio, resolution, seed, randomize_seed, output_format,
                       custom_size, width, height, steps, guidance, progress)

    def edit(
        image: str | None,
        prompt: str,
        aspect_ratio: str = "match_input",
        resolution: str = "1k",
        seed: float = 0,
        randomize_seed: bool = True,
        output_format: str = "jpeg",
        custom_size: bool = False,
        width: float = 1024,
        height: float = 1024,
        steps: float = spec.steps,
        guidance: float = spec.guidance,
        progress=gr.Progress(),
    ) -> tuple[str, int, str]:
        """Edit an image with a text instruction with FLUX.2 [klein].

        Args:
            image: the image to edit (PNG, JPEG or WebP, at least 64 px a side, aspect at most 8:1).
            prompt: the edit to make, e.g. "make it night time".
            aspect_ratio: "match_input" keeps the input's aspect ratio; or a preset such as square_1_1.
            resolution: "1k" (about 1 megapixel) or "2k" (about 4 megapixels, longer side at most 2048).
            seed: the seed to use when randomize_seed is false (0..4294967295).
            randomize_seed: pick a random seed; the seed used is returned either way.
            output_format: "jpeg" (default, fastest), "png" or "webp".
            custom_size: use width and height instead of the preset.
            width: custom width in pixels, a multiple of 16 in 64..2048.
            height: custom height in pixels, a multiple of 16 in 64..2048.
            steps: denoising steps (the model's default: 4 for distilled models, 50 for base models).
            guidance: guidance scale, used by base models only.

        Returns:
            The edited image file, the seed used, and a line describing the generation.
        """
        with user_errors():
            if not image:
                raise InvalidRequest("image", "is missing; upload the image to edit")
            reference = load_reference(image, "image", limits)
            return run(prompt, (reference,), aspect_ratio, resolution, seed, randomize_seed, output_format,
                       custom_size, width, height, steps, guidance, progress)

    def multi_reference(
        images: list | None,
        prompt: str,
        aspect_ratio: str = "match_input",
        resolution: str = "1k",
        seed: float = 0,
        randomize_seed: bool = True,
        output_format: str = "jpeg",
        custom_size: bool = False,
        width: float = 1024,
        height: float = 1024,
        steps: float = spec.steps,
        guidance: float = spec.guidance,
        progress=gr.Progress(),
    ) -> tuple[str, int, str]:
        """Generate an image from 2 to 4 reference images and a prompt with FLUX.2 [klein].

        Args:
            images: 2 to 4 reference images (PNG, JPEG or WebP), e.g. a person, a product and a place.
            prompt: how to combine them, e.g. "the person from image 1 holding the cup from image 2".
            aspect_ratio: "match_input" uses the first image's aspect ratio; or a preset such as landscape.
            resolution: "1k" (about 1 megapixel) or "2k" (about 4 megapixels, longer side at most 2048).
            seed: the seed to use when randomize_seed is false (0..4294967295).
            randomize_seed: pick a random seed; the seed used is returned either way.
            output_format: "jpeg" (default, fastest), "png" or "webp".
            custom_size: use width and height instead of the preset.
            width: custom width in pixels, a multiple of 16 in 64..2048.
            height: custom height in pixels, a multiple of 16 in 64..2048.
            steps: denoising steps (the model's default: 4 for distilled models, 50 for base models).
            guidance: guidance scale, used by base models only.

        Returns:
            The generated image file, the seed used, and a line describing the generation.
        """
        with user_errors():
            paths = gallery_paths(images)
            if not 2 <= len(paths) <= limits.max_references:
                raise InvalidRequest(
                    "images",
                    f"{len(paths)} reference image{'s' if len(paths) != 1 else ''} given, "
                    f"multi-reference needs 2 to {limits.max_references}",
                )
            references = tuple(load_reference(p, f"images[{i}]", limits) for i, p in enumerate(paths))
            return run(prompt, references, aspect_ratio, resolution, seed, randomize_seed, output_format,
                       custom_size, width, height, steps, guidance, progress)

    with gr.Blocks(title="Klein Studio") as demo:
        gr.Markdown("# Klein Studio\nFLUX.2 [klein]: text-to-image, editing and multi-reference generation.")
        gr.Markdown(model_banner(engine), elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab("Text to image", id="text_to_image"):
                _workflow_tab(text_to_image, "text_to_image", None, spec, default_aspect="square_1_1")
            with gr.Tab("Edit", id="edit"):
                image_input = gr.Image(label="Image to edit", type="filepath", image_mode=None,
                                       sources=["upload", "clipboard"], height=320)
                _workflow_tab(edit, "edit", image_input, spec, default_aspect=presets.MATCH_INPUT)
            with gr.Tab("Multi-reference", id="multi_reference"):
                gallery = gr.Gallery(label=f"Reference images (2 to {limits.max_references})", type="filepath",
                                     interactive=True, columns=4, height=240, file_types=["image"])
                _workflow_tab(multi_reference, "multi_reference", gallery, spec, default_aspect=presets.MATCH_INPUT)
    return demo


def _workflow_tab(fn, api_name: str, reference_input, spec, default_aspect: str) -> None:
    """Prompt, controls, Advanced accordion, result; wires the Generate button and Enter to `fn`."""
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the image…", elem_id=f"{api_name}-prompt")
            choices = PRESET_CHOICES if reference_input is None else [presets.MATCH_INPUT] + PRESET_CHOICES
            with gr.Row():
                # allow_custom_value lets the engine reject a bad value with a message naming the field.
                aspect_ratio = gr.Dropdown(choices, value=default_aspect, label="Aspect ratio", allow_custom_value=True)
                resolution = gr.Dropdown(RESOLUTION_CHOICES, value="1k", label="Resolution", allow_custom_value=True)
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0)
                randomize_seed = gr.Checkbox(label="Randomize seed", value=True)
                output_format = gr.Dropdown(list(OUTPUT_FORMATS), value="jpeg", label="Format", allow_custom_value=True)
            with gr.Accordion("Advanced", open=False):
                custom_size = gr.Checkbox(label="Custom size (overrides the preset)", value=False)
                with gr.Row():
                    width = gr.Slider(presets.MIN_SIDE, presets.MAX_SIDE, value=1024, step=16, label="Width")
                    height = gr.Slider(presets.MIN_SIDE, presets.MAX_SIDE, value=1024, step=16, label="Height")
                steps = gr.Slider(1, 100 if not spec.distilled else 16, value=spec.steps, step=1, label="Steps")
                guidance = gr.Slider(0, 20, value=spec.guidance, step=0.1, label="Guidance",
                                     visible=not spec.distilled)
            button = gr.Button("Generate", variant="primary", elem_id=f"{api_name}-generate")
        with gr.Column(scale=1):
            result = gr.Image(label="Result", type="filepath", interactive=False, elem_id=f"{api_name}-result")
            seed_used = gr.Number(label="Seed used", precision=0, interactive=False)
            info = gr.Markdown(label="Generation info", elem_id=f"{api_name}-info")
    inputs = [reference_input] if reference_input is not None else []
    inputs += [prompt, aspect_ratio, resolution, seed, randomize_seed, output_format,
               custom_size, width, height, steps, guidance]
    gr.on(
        triggers=[button.click, prompt.submit],
        fn=fn,
        inputs=inputs,
        outputs=[result, seed_used, info],
        api_name=api_name,
        concurrency_id=GPU_LANE,
    )


def launch(demo: gr.Blocks, engine: Engine, settings, **kwargs: Any):
    """Launch the app with the house theme, the upload limit and the output folder allowed."""
    return demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        max_file_size=engine.limits.max_image_bytes,
        allowed_paths=[str(engine.output_dir)],
        theme=gr.themes.Soft(),
        footer_links=["api", "gradio", "settings"],
        **kwargs,
    )
