"""The Gradio app: build_demo(engine) -> gr.Blocks. The only module that imports gradio.

Three tabs, each a named API endpoint (text_to_image, edit, multi_reference) over the same engine.
Helper events (history, reuse seed, use as input, load settings, cancel) are private to the page.
Event functions turn engine errors into gr.Error; their docstrings are the API and MCP descriptions.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from . import presets
from .display import COMMON_ARGS_DOC, format_info, model_banner
from .encode import settings_from_image
from .engine import Engine
from .errors import InvalidRequest, KleinError
from .images import load_reference, too_many_pixels, unreadable_image
from .request import DEFAULT_OUTPUT_FORMAT, DEFAULT_SAFETY_TOLERANCE, OUTPUT_FORMATS
from .ui_state import (Cancellations, TabControls, gallery_paths, mcp_gallery_schema, request_from_controls,
                       restore_updates, with_history_entry)

log = logging.getLogger(__name__)

GPU_LANE = "gpu"  # every generating event shares it, so two tabs never run the model at once
ASSETS = Path(__file__).resolve().parent.parent / "assets"
# Enter in a prompt box generates, Shift+Enter adds a line (Gradio's own multi-line box does the reverse).
ENTER_TO_GENERATE_JS = (ASSETS / "enter_to_generate.js").read_text()
# System fonts only: the page must not fetch web fonts from another host.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "Consolas", "monospace"])


def named_slider(field: str, *args: Any, **kwargs: Any) -> gr.Slider:
    """A Slider whose out-of-range error names its field (Gradio's own says only "Value 7 is greater...").

    The instance's preprocess is wrapped rather than subclassing: Gradio writes a .pyi file next to
    any module that defines a component subclass.
    """
    slider = gr.Slider(*args, **kwargs)
    check_range = slider.preprocess

    def preprocess(payload: float | None) -> float | None:
        if payload is None:  # an API call that sends null: the event function names what is missing
            return None
        try:
            return check_range(payload)
        except gr.Error:
            raise gr.Error(f"{field}: {payload!r} is out of range {slider.minimum:g}..{slider.maximum:g}",
                           print_exception=False) from None

    slider.preprocess = preprocess
    return slider


def named_image(field: str, limits, **kwargs: Any) -> gr.Image:
    """An Image input whose unreadable or oversized uploads are refused with a message naming `field`.

    Gradio opens the upload's header with PIL before our checks run; PIL refuses images over about
    179 MP there with its own DecompressionBombError, which would reach the user as a bare error.
    """
    image = gr.Image(**kwargs)
    open_header = image.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return open_header(payload)
        except Image.DecompressionBombError as exc:
            message = str(InvalidRequest(field, too_many_pixels(exc, limits)))
        except (UnidentifiedImageError, OSError) as exc:
            message = str(InvalidRequest(field, unreadable_image(type(exc).__name__)))
        raise gr.Error(message, print_exception=False)

    image.preprocess = preprocess
    return image


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


def build_demo(engine: Engine) -> gr.Blocks:
    """The Klein Studio Blocks app over `engine`."""
    spec = engine.model.spec
    limits = engine.limits
    cancellations = Cancellations()
    max_tolerance = engine.moderator.max_tolerance

    def run(references, *controls, progress, request) -> tuple[str, int, str]:
        generation = request_from_controls(references, *controls, distilled=spec.distilled, limits=limits)
        session = getattr(request, "session_hash", None) or "anonymous"
        cancel = cancellations.start(session)
        try:
            progress(0, desc="Starting")
            result = engine.generate(generation, lambda step, total: progress((step, total), unit="steps"),
                                     cancel=cancel)
        finally:
            cancellations.finish(session, cancel)
        return str(result.path), result.seed, format_info(result)

    def text_to_image(prompt: str, aspect_ratio: str = "square_1_1", resolution: str = "1k", seed: float = 0,
                      randomize_seed: bool = True, output_format: str = DEFAULT_OUTPUT_FORMAT,
                      custom_size: bool = False, width: float = 1024, height: float = 1024,
                      steps: float = spec.steps, guidance: float = spec.guidance,
                      safety_tolerance: float = DEFAULT_SAFETY_TOLERANCE,
                      progress=gr.Progress(), request: gr.Request = None) -> tuple[str, int, str]:
        """Generate an image from a text prompt with FLUX.2 [klein].

        Args:
            prompt: what the image should show.
            aspect_ratio: a preset such as square_1_1, widescreen_16_9, landscape or portrait.
{common}
        Returns:
            The image file, the seed used, and a line describing the generation.
        """
        with user_errors():
            return run((), prompt, aspect_ratio, resolution, seed, randomize_seed, output_format, custom_size,
                       width, height, steps, guidance, safety_tolerance, progress=progress, request=request)

    def edit_image(image: str | None, prompt: str, aspect_ratio: str = "match_input", resolution: str = "1k",
                   seed: float = 0, randomize_seed: bool = True, output_format: str = DEFAULT_OUTPUT_FORMAT,
                   custom_size: bool = False, width: float = 1024, height: float = 1024,
                   steps: float = spec.steps, guidance: float = spec.guidance,
                   safety_tolerance: float = DEFAULT_SAFETY_TOLERANCE,
                   progress=gr.Progress(), request: gr.Request = None) -> tuple[str, int, str]:
        """Edit an image with a text instruction with FLUX.2 [klein].

        Args:
            image: the image to edit (PNG, JPEG or WebP, at least 64 px a side, aspect at most 8:1).
            prompt: the edit to make, e.g. "make it night time".
            aspect_ratio: "match_input" keeps the input's aspect ratio; or a preset such as square_1_1.
{common}
        Returns:
            The edited image file, the seed used, and a line describing the generation.
        """
        with user_errors():
            if not image:
                raise InvalidRequest("image", "is missing; upload the image to edit")
            reference = load_reference(image, "image", limits)
            return run((reference,), prompt, aspect_ratio, resolution, seed, randomize_seed, output_format,
                       custom_size, width, height, steps, guidance, safety_tolerance, progress=progress,
                       request=request)

    def multi_reference_image(images: list | None, prompt: str, aspect_ratio: str = "match_input",
                              resolution: str = "1k", seed: float = 0, randomize_seed: bool = True,
                              output_format: str = DEFAULT_OUTPUT_FORMAT, custom_size: bool = False,
                              width: float = 1024, height: float = 1024, steps: float = spec.steps,
                              guidance: float = spec.guidance,
                              safety_tolerance: float = DEFAULT_SAFETY_TOLERANCE,
                              progress=gr.Progress(), request: gr.Request = None) -> tuple[str, int, str]:
        """Generate an image from 2 to 4 reference images and a prompt with FLUX.2 [klein].

        Args:
            images: 2 to 4 reference images (PNG, JPEG or WebP), e.g. a person, a product and a place.
            prompt: how to combine them, e.g. "the person from image 1 holding the cup from image 2".
            aspect_ratio: "match_input" uses the first image's aspect ratio; or a preset such as landscape.
{common}
        Returns:
            The generated image file, the seed used, and a line describing the generation.
        """
        with user_errors():
            paths = gallery_paths(images)
            if not 2 <= len(paths) <= limits.max_references:
                raise InvalidRequest("images", f"{len(paths)} reference image{'s' if len(paths) != 1 else ''} "
                                               f"given, multi-reference needs 2 to {limits.max_references}")
            references = tuple(load_reference(p, f"images[{i}]", limits) for i, p in enumerate(paths))
            return run(references, prompt, aspect_ratio, resolution, seed, randomize_seed, output_format,
                       custom_size, width, height, steps, guidance, safety_tolerance, progress=progress,
                       request=request)

    for fn in (text_to_image, edit_image, multi_reference_image):
        fn.__doc__ = fn.__doc__.replace("{common}\n", COMMON_ARGS_DOC)

    # Gradio keeps every upload and a copy of every result in its cache: hourly, drop those over a day old.
    with gr.Blocks(title="Klein Studio", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown("# Klein Studio\nFLUX.2 [klein]: text-to-image, editing and multi-reference generation.")
        gr.Markdown(model_banner(engine), elem_id="model-banner")
        history = gr.State([])
        with gr.Tabs(elem_id="workflow-tabs") as tabs:
            with gr.Tab("Text to image", id="text_to_image"):
                t2i = _workflow_tab("text_to_image", None, spec, max_tolerance)
                gr.Examples([["a lighthouse on a cliff at dusk, volumetric light"],
                             ["a bowl of ramen, studio photo, top-down"],
                             ["an isometric cozy reading nook, soft morning light"]], [t2i.prompt],
                            label="Example prompts")
            with gr.Tab("Edit", id="edit"):
                image_input = named_image("image", limits, label="Image to edit", type="filepath", image_mode=None,
                                          sources=["upload", "clipboard"], height=300, elem_id="edit-image")
                edit = _workflow_tab("edit", image_input, spec, max_tolerance)
                gr.Examples([[str(ASSETS / "armchair.png"), "make the armchair green velvet"],
                             [str(ASSETS / "mountains.jpg"), "make it a snowy winter night"],
                             [str(ASSETS / "robot.png"), "give the robot a red scarf"]],
                            [image_input, edit.prompt], label="Examples")
            with gr.Tab("Multi-reference", id="multi_reference"):
                gallery = gr.Gallery(label=f"Reference images (2 to {limits.max_references})", type="filepath",
                                     interactive=True, columns=4, height=220, file_types=["image"],
                                     fit_columns=False, object_fit="contain",
                                     elem_id="multi_reference-images")
                multi = _workflow_tab("multi_reference", gallery, spec, max_tolerance)
                gr.Examples([[[str(ASSETS / "robot.png"), str(ASSETS / "mountains.jpg")],
                              "the robot from image 1 standing in the landscape of image 2"],
                             [[str(ASSETS / "armchair.png"), str(ASSETS / "mug.png"), str(ASSETS / "mountains.jpg")],
                              "the armchair and the mug on a terrace facing the mountains"]],
                            [gallery, multi.prompt], label="Examples")
        with gr.Accordion("History (this browser session; click one to restore its settings)", open=True):
            history_gallery = gr.Gallery(show_label=False, columns=8, height=180, allow_preview=False,
                                         fit_columns=False, object_fit="cover", interactive=False,
                                         elem_id="history")
        with gr.Accordion("Load settings from image", open=False):
            settings_image = named_image("settings image", limits, type="filepath", image_mode=None,
                                         label="Drop an image made by Klein Studio (or with A1111-style parameters)",
                                         sources=["upload"], height=200, elem_id="settings-image")

        controls = {"text_to_image": t2i, "edit": edit, "multi_reference": multi}
        for tab, fn in ((t2i, text_to_image), (edit, edit_image), (multi, multi_reference_image)):
            _wire_tab(tab, fn, history, history_gallery, cancellations)
            _wire_use_as_input(tab, image_input, gallery, tabs)

        every_control = [c for tab in controls.values() for c in tab.restorable()]

        def restore_from_history(entries: list[dict], evt: gr.SelectData) -> dict:
            """Restore a history item's prompt, seed and settings in its tab.

            Args:
                entries: this session's history, newest first.
            """
            entry = entries[evt.index]
            workflow = entry.get("workflow", "text_to_image")
            return {**restore_updates(controls[workflow], entry), tabs: gr.Tabs(selected=workflow)}

        def load_settings(path: str | None) -> dict:
            """Fill a tab from the generation settings embedded in an image.

            Args:
                path: an image made by Klein Studio, or one with A1111-style parameters.
            """
            if not path:
                return {}
            with user_errors():
                settings = settings_from_image(path)
            if not settings:
                gr.Warning("This image carries no generation settings (no Klein Studio or A1111 metadata).")
                return {}
            workflow = settings.get("workflow") if settings.get("workflow") in controls else "text_to_image"
            made_with = settings.get("model")
            if made_with and made_with != spec.name:
                gr.Warning(f"Settings loaded; the image was made with {made_with} and this server runs {spec.name}, "
                           "so the same seed gives a different image.")
            else:
                gr.Info(f"Settings loaded from an image made with {made_with or 'an unknown model'}.")
            return {**restore_updates(controls[workflow], settings), tabs: gr.Tabs(selected=workflow)}

        history_gallery.select(restore_from_history, [history], every_control + [tabs],
                               api_visibility="private", queue=False)
        # Queued, because gr.Info / gr.Warning reach the page only through the queue.
        settings_image.upload(load_settings, [settings_image], every_control + [tabs], api_visibility="private")
    return demo


def _workflow_tab(workflow: str, reference, spec, max_tolerance: int) -> TabControls:
    """Prompt, controls, Advanced accordion and result for one workflow."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the image… (Enter generates, "
                                "Shift+Enter adds a line)", elem_id=f"{workflow}-prompt")
            choices = list(presets.ASPECT_PRESETS) if reference is None else [presets.MATCH_INPUT,
                                                                                *presets.ASPECT_PRESETS]
            with gr.Row():
                # allow_custom_value lets the engine reject a bad value with a message naming the field.
                aspect_ratio = gr.Dropdown(choices, value=choices[0], label="Aspect ratio", allow_custom_value=True)
                resolution = gr.Dropdown(list(presets.RESOLUTIONS), value="1k", label="Resolution",
                                         allow_custom_value=True)
                output_format = gr.Dropdown(list(OUTPUT_FORMATS), value=DEFAULT_OUTPUT_FORMAT, label="Format",
                                            allow_custom_value=True)
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, elem_id=f"{workflow}-seed")
                randomize_seed = gr.Checkbox(label="Randomize seed", value=True, elem_id=f"{workflow}-randomize")
            safety_tolerance = named_slider("safety_tolerance", 0, max_tolerance, step=1,
                                            value=min(DEFAULT_SAFETY_TOLERANCE, max_tolerance),
                                            label="Safety tolerance (0 strictest, 5 most permissive)",
                                            elem_id=f"{workflow}-safety")
            with gr.Accordion("Advanced", open=False):
                custom_size = gr.Checkbox(label="Custom size (overrides the preset)", value=False)
                with gr.Row():
                    width = named_slider("width", presets.MIN_SIDE, presets.MAX_SIDE, value=1024, step=16,
                                         label="Width")
                    height = named_slider("height", presets.MIN_SIDE, presets.MAX_SIDE, value=1024, step=16,
                                          label="Height")
                steps = named_slider("steps", 1, 100 if not spec.distilled else 16, value=spec.steps, step=1,
                                     label="Steps", elem_id=f"{workflow}-steps")
                guidance = named_slider("guidance", 0, 20, value=spec.guidance, step=0.1, label="Guidance",
                                        visible=not spec.distilled)
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id=f"{workflow}-generate", scale=3)
                cancel = gr.Button("Cancel", variant="stop", elem_id=f"{workflow}-cancel", scale=1)
        with gr.Column(scale=1, min_width=320):
            result = gr.Image(label="Result", type="filepath", interactive=False, elem_id=f"{workflow}-result",
                              buttons=["download", "fullscreen"])
            with gr.Row():
                seed_used = gr.Number(label="Seed used", precision=0, interactive=False,
                                      elem_id=f"{workflow}-seed-used")
                reuse_seed = gr.Button("♻ Reuse seed", size="sm", elem_id=f"{workflow}-reuse-seed")
            with gr.Row():
                to_edit = gr.Button("Edit this image", size="sm", elem_id=f"{workflow}-to-edit")
                to_multi = gr.Button("Add to multi-reference", size="sm", elem_id=f"{workflow}-to-multi")
            info = gr.Markdown(label="Generation info", elem_id=f"{workflow}-info")
    return TabControls(workflow, reference, prompt, aspect_ratio, resolution, seed, randomize_seed, output_format,
                       custom_size, width, height, steps, guidance, safety_tolerance, generate, cancel, result, seed_used,
                       reuse_seed, to_edit, to_multi, info)


def _wire_tab(tab: TabControls, fn, history, history_gallery, cancellations: Cancellations) -> None:
    """Generate (the public endpoint), then history; Cancel; Reuse seed."""
    event = tab.generate.click(fn, tab.inputs(), [tab.result, tab.seed_used, tab.info], api_name=tab.workflow,
                               concurrency_id=GPU_LANE)

    def add_to_history(path: str | None, entries: list[dict]) -> tuple[list[dict], list]:
        """Put a new result first in this session's history.

        Args:
            path: the result's file.
            entries: the history so far.
        """
        with user_errors():
            entries = with_history_entry(entries, path)
        return entries, [(e["path"], e["caption"]) for e in entries]

    def cancel_generation(request: gr.Request) -> None:
        """Stop this visitor's queued or running generation (between denoising steps).

        Args:
            request: whose generation to stop.
        """
        cancellations.cancel(request.session_hash)
        gr.Info("Cancelled.")

    event.success(add_to_history, [tab.result, history], [history, history_gallery],
                  api_visibility="private", queue=False)
    tab.cancel.click(cancel_generation, None, None, cancels=[event], api_visibility="private")
    def reuse_seed(seed: float | None):
        """Put the seed used into the seed box and turn randomizing off.

        Args:
            seed: the seed of the last result.
        """
        return (seed, False) if seed is not None else (gr.skip(), gr.skip())

    tab.reuse_seed.click(reuse_seed, [tab.seed_used], [tab.seed, tab.randomize_seed], api_visibility="private",
                         queue=False)


def _wire_use_as_input(tab: TabControls, image_input, gallery, tabs) -> None:
    """Send a result to the Edit tab, or add it to the Multi-reference gallery."""

    def to_edit(path: str | None):
        """Open a result in the Edit tab.

        Args:
            path: the result's file.
        """
        if not path:
            gr.Warning("Generate an image first.")
            return gr.skip(), gr.skip()
        return path, gr.Tabs(selected="edit")

    def to_multi(path: str | None, current: list | None):
        """Add a result to the Multi-reference gallery (at most 4).

        Args:
            path: the result's file.
            current: the gallery's images.
        """
        if not path:
            gr.Warning("Generate an image first.")
            return gr.skip(), gr.skip()
        paths = gallery_paths(current)
        if len(paths) >= 4:
            gr.Warning("Multi-reference takes at most 4 images; remove one first.")
            return gr.skip(), gr.Tabs(selected="multi_reference")
        return paths + [path], gr.Tabs(selected="multi_reference")

    tab.to_edit.click(to_edit, [tab.result], [image_input, tabs], api_visibility="private")
    tab.to_multi.click(to_multi, [tab.result, gallery], [gallery, tabs], api_visibility="private")


def _fix_gradio_mcp_server() -> None:
    """Two fixes to Gradio 6.31's MCP server, applied once:

    - a client that sends no progress token got one text repr of a multi-output result
      (_execute_tool_without_progress returns [result]); it gets each output, the image as image content;
    - a Gallery parameter's schema had dangling $refs, so multi_reference_image could not be called
      (ui_state.mcp_gallery_schema).
    """
    from anyio.to_thread import run_sync
    from gradio.mcp import GradioMCPServer

    if getattr(GradioMCPServer, "_klein_fixed", False):
        return
    input_schema = GradioMCPServer.get_input_schema

    async def execute_without_progress(self, job: Any) -> list[Any]:
        result = await run_sync(job.result)
        return list(result) if isinstance(result, tuple) else [result]

    def get_input_schema(self, tool_name: str, parameters: dict[str, str] | None = None):
        return mcp_gallery_schema(*input_schema(self, tool_name, parameters))

    GradioMCPServer._execute_tool_without_progress = execute_without_progress
    GradioMCPServer.get_input_schema = get_input_schema
    GradioMCPServer._klein_fixed = True


def launch(demo: gr.Blocks, engine: Engine, settings, **kwargs: Any):
    """Launch the app with the house theme, the upload limit, the output folder allowed, and MCP if asked."""
    if settings.mcp:
        _fix_gradio_mcp_server()
    return demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        max_file_size=engine.limits.max_image_bytes,
        allowed_paths=[str(engine.output_dir), str(ASSETS)],
        theme=THEME,
        js=ENTER_TO_GENERATE_JS,
        footer_links=["api", "gradio", "settings"],
        mcp_server=settings.mcp,
        **kwargs,
    )
