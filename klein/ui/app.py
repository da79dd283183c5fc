"""The Gradio app: build_demo(engine) -> gr.Blocks, and launch. Only klein/ui imports gradio.

Four tabs, each a named API endpoint (text_to_image, edit, multi_reference, inpaint) over the same engine;
the endpoint functions are generated in endpoints.py, the controls built in controls.py, the page's
private helper events wired in events.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from .. import presets
from ..config import ApiKeys, Settings
from ..errors import InvalidRequest
from ..generation.engine import Engine
from ..images import load_reference
from ..request import check_reference_count
from .controls import TabControls, workflow_tab
from .display import batch_info, model_banner, moderated_note
from .endpoints import ENDPOINTS, Outputs, make_endpoint, with_signature_defaults
from .events import wire_restore, wire_tab, wire_use_as_input
from .inpaint import inpaint_tab
from .inputs import named_gallery, named_image
from .loras import lora_choices, refresh_choices
from .mcp import fix_gradio_mcp_server
from .state import Cancellations, batch_caption, gallery_paths, request_from_controls

ASSETS = Path(__file__).resolve().parents[2] / "assets"
# Enter in a prompt box generates, Shift+Enter adds a line (Gradio's own multi-line box does the reverse).
ENTER_TO_GENERATE_JS = (ASSETS / "enter_to_generate.js").read_text()
# System fonts only: the page must not fetch web fonts from another host.
LOGIN_MESSAGE = "Log in with any user name and one of this server's API keys (KLEIN_API_KEYS) as the password."
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "Consolas", "monospace"])
CSS = (ASSETS / "klein.css").read_text()


def workflow_functions(engine: Engine, cancellations: Cancellations) -> dict[str, Any]:
    """api_name -> the endpoint's event function: decode the references, build the request, run the engine."""
    spec, limits = engine.model.spec, engine.limits

    def run(references: tuple, settings: dict[str, Any], progress: Any, request: Any) -> Outputs:
        generation = request_from_controls(references, **settings, distilled=spec.distilled, limits=limits)
        session = getattr(request, "session_hash", None) or "anonymous"
        cancel = cancellations.start(session)
        try:
            progress(0, desc="Starting")
            # Steps count across the batch; Cancel stops the whole batch (it keeps nothing).
            batch = engine.generate_batch(generation, lambda step, total: progress((step, total), unit="steps"),
                                          cancel=cancel)
        finally:
            cancellations.finish(session, cancel)
        if batch.moderated:  # the page shows it; an API caller reads info["moderated_seeds"]
            gr.Warning(moderated_note(batch.moderated))
        strength = {"strength": generation.strength} if generation.mask is not None else {}
        first = batch.results[0]
        images = [(str(result.path), batch_caption(result.seed)) for result in batch.results]
        return str(first.path), first.seed, batch_info(batch) | strength, images

    def text_to_image(values: dict[str, Any], progress: Any, request: Any) -> Outputs:
        return run((), values, progress, request)

    def edit(values: dict[str, Any], progress: Any, request: Any) -> Outputs:
        image = values.pop("image")
        if not image:
            raise InvalidRequest("image", "is missing; upload the image to edit")
        return run((load_reference(image, "image", limits),), values, progress, request)

    def multi_reference(values: dict[str, Any], progress: Any, request: Any) -> Outputs:
        paths = gallery_paths(values.pop("images"))
        check_reference_count(len(paths), "images", minimum=presets.MULTI_REFERENCE_MIN)
        references = tuple(load_reference(p, f"images[{i}]", limits) for i, p in enumerate(paths))
        return run(references, values, progress, request)

    def inpaint(values: dict[str, Any], progress: Any, request: Any) -> Outputs:
        image, mask, paths = values.pop("image"), values.pop("mask"), gallery_paths(values.pop("references"))
        if not image:
            raise InvalidRequest("image", "is missing; give the image to paint on")
        if not mask:
            raise InvalidRequest("mask", "is missing; give a mask the image's size (white repaints)")
        if len(paths) > presets.MAX_REFERENCES - 1:
            raise InvalidRequest("references", f"{len(paths)} reference images given, at most "
                                 f"{presets.MAX_REFERENCES - 1} besides the image painted on")
        references = tuple(load_reference(p, f"references[{i}]", limits) for i, p in enumerate(paths))
        values["mask"] = load_reference(mask, "mask", limits, mask=True, full_size=True)
        image = load_reference(image, "image", limits, full_size=True)  # the result keeps the input's size
        return run((image, *references), values, progress, request)

    handlers = {"text_to_image": text_to_image, "edit": edit, "multi_reference": multi_reference,
                "inpaint": inpaint}
    return {e.api_name: make_endpoint(e, spec, handlers[e.api_name]) for e in ENDPOINTS}


def build_demo(engine: Engine) -> gr.Blocks:
    """The Klein Studio Blocks app over `engine`."""
    spec = engine.model.spec
    limits = engine.limits
    cancellations = Cancellations()
    max_tolerance = engine.moderator.max_tolerance
    functions = workflow_functions(engine, cancellations)
    loras = lora_choices(engine)
    endpoints = {e.api_name: e for e in ENDPOINTS}

    # Gradio keeps every upload and a copy of every result in its cache: hourly, drop those over a day old.
    with gr.Blocks(title="Klein Studio", delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown("# Klein Studio\n<span id='tagline'>FLUX.2 [klein]: text-to-image, editing, "
                    "multi-reference generation and inpainting.</span>", elem_id="header")
        gr.Markdown(model_banner(engine), elem_id="model-banner")
        history = gr.State([])
        with gr.Tabs(elem_id="workflow-tabs") as tabs:
            with gr.Tab("Text to image", id="text_to_image"):
                t2i = workflow_tab(endpoints["text_to_image"], None, spec, max_tolerance, loras)
                gr.Examples([["a lighthouse on a cliff at dusk, volumetric light"],
                             ["a bowl of ramen, studio photo, top-down"],
                             ["an isometric cozy reading nook, soft morning light"]], [t2i.prompt],
                            label="Example prompts")
            with gr.Tab("Edit", id="edit"):
                image_input = named_image("image", limits, label="Image to edit", type="filepath", image_mode=None,
                                          sources=["upload", "clipboard"], height=300, elem_id="edit-image")
                edit = workflow_tab(endpoints["edit"], image_input, spec, max_tolerance, loras)
                gr.Examples([[str(ASSETS / "armchair.png"), "make the armchair green velvet"],
                             [str(ASSETS / "mountains.jpg"), "make it a snowy winter night"],
                             [str(ASSETS / "robot.png"), "give the robot a red scarf"]],
                            [image_input, edit.prompt], label="Examples")
            with gr.Tab("Multi-reference", id="multi_reference"):
                # One row of MAX_REFERENCES thumbnails of at most 180 px (klein.css), so the height holds them.
                gallery = named_gallery("images", label=f"Reference images ({presets.MULTI_REFERENCE_MIN} to "
                                        f"{presets.MAX_REFERENCES})", interactive=True, columns=presets.MAX_REFERENCES,
                                        height=250, fit_columns=False, object_fit="contain",
                                        elem_id="multi_reference-images")
                multi = workflow_tab(endpoints["multi_reference"], gallery, spec, max_tolerance, loras)
                gr.Examples([[[str(ASSETS / "robot.png"), str(ASSETS / "mountains.jpg")],
                              "the robot from image 1 standing in the landscape of image 2"],
                             [[str(ASSETS / "armchair.png"), str(ASSETS / "mug.png"), str(ASSETS / "mountains.jpg")],
                              "the armchair and the mug on a terrace facing the mountains"]],
                            [gallery, multi.prompt], label="Examples")
            with gr.Tab("Inpaint", id="inpaint"):
                inpaint = inpaint_tab(spec, max_tolerance, limits, loras)
        with gr.Accordion("History (this browser session; click one to restore its settings)", open=True):
            history_gallery = gr.Gallery(show_label=False, columns=8, height=180, allow_preview=False,
                                         fit_columns=False, object_fit="cover", interactive=False,
                                         elem_id="history")
        with gr.Accordion("Load settings from image", open=False):
            settings_image = named_image("settings image", limits, type="filepath", image_mode=None,
                                         label="Drop an image made by Klein Studio (or with A1111-style parameters)",
                                         sources=["upload"], height=200, elem_id="settings-image")

        controls: dict[str, TabControls] = {"text_to_image": t2i, "edit": edit, "multi_reference": multi,
                                            "inpaint": inpaint.controls}
        for tab in controls.values():
            prepare = inpaint.prepare() if tab is inpaint.controls else None
            wire_tab(tab, functions[tab.workflow], history, history_gallery, cancellations, prepare)
            wire_use_as_input(tab, image_input, gallery, inpaint.editor, tabs)
        wire_restore(controls, tabs, history, history_gallery, settings_image, spec.name, lambda: lora_choices(engine))
        list_loras, menus = refresh_choices([tab.lora_picker for tab in controls.values()], engine)
        demo.load(list_loras, None, menus, api_visibility="private", queue=False, show_progress="hidden")
    demo.get_api_info = with_signature_defaults(demo.get_api_info, functions)
    return demo


def login_check(keys: ApiKeys):
    """For launch(auth=...): any user name, and an API key as the password."""

    def check(_username: str, password: str) -> bool:
        return keys.is_valid(password.strip())

    return check


def launch(demo: gr.Blocks, engine: Engine, settings: Settings, keys: ApiKeys | None = None, **kwargs: Any):
    """Launch the app with the house theme, the upload limit, the output folder allowed, and MCP if asked.

    With `keys` (and settings.public_page off) the page and every Gradio route need a login whose
    password is an API key; scripts and agents send the key in a header instead (rest/gate.py).
    """
    gated = bool(keys) and not settings.public_page
    if settings.mcp:
        fix_gradio_mcp_server(keys.internal if gated else None)
    if gated:
        kwargs.update(auth=login_check(keys), auth_message=LOGIN_MESSAGE)
    demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        quiet=True,  # Gradio's own lines point at launch(share=True); ours name the flags
        prevent_thread_lock=True,
        max_file_size=engine.limits.max_image_bytes,
        allowed_paths=[str(engine.output_dir), str(ASSETS)],
        theme=THEME,
        css=CSS,
        js=ENTER_TO_GENERATE_JS,
        footer_links=["api", "gradio", "settings"],
        mcp_server=settings.mcp,
        **kwargs,
    )
    print(f"* Running on local URL:  {demo.local_url}")
    print(f"* Running on public URL: {demo.share_url}" if demo.share_url else
          "* To create a public link, run with --share (or KLEIN_SHARE=1).", flush=True)
    demo.block_thread()  # until Ctrl+C or SIGTERM, then Gradio closes the server
