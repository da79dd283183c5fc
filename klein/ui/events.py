"""The page's helper events, private to the page (not in the API): clearing the last result, the info
line, a batch's gallery (shown for more than one image; a click makes one the current result), history,
Cancel, Reuse seed, Custom size and the preset labels, Edit this image / Add to multi-reference,
restoring settings from history or from an image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from .. import presets
from ..output.encode import settings_from_image
from .controls import TabControls
from .display import aspect_choices, format_info
from .endpoints import user_errors
from .loras import COMPOSE_JS
from .state import Cancellations, gallery_paths, select_from_batch, with_history_entries

GPU_LANE = "gpu"  # every generating event shares it, so two tabs never run the model at once
# Run in the browser as Generate is clicked: the last result, its seed, info, batch and rewrite go, so after
# an error or Cancel nothing stale is left on show (and no "Error" pill covers an old info line); and the
# LoRA rows become the endpoint's `loras` list.
CLEAR_RESULT_JS = f"(...rows) => [null, null, null, null, '', '', '', ({COMPOSE_JS})(rows)]"
PAGE_ONLY = dict(api_visibility="private", queue=False, show_progress="hidden")
# A step before the endpoint: (function, inputs, outputs), e.g. inpainting's image and mask from the editor.
Prepare = tuple[Callable, list, list]


def wire_tab(tab: TabControls, fn: Callable, history: gr.State, history_gallery: gr.Gallery,
             cancellations: Cancellations, prepare: Prepare | None = None) -> None:
    """Generate (clear, then the public endpoint with one progress bar, on the image), then the info line
    and history; Cancel; Reuse seed; the settings' own events."""
    shown = [tab.info, tab.seed_shown, tab.enhanced_prompt]
    cleared = tab.generate.click(None, tab.lora_picker.rows(), tab.outputs() + shown + [tab.loras],
                                 js=CLEAR_RESULT_JS, **PAGE_ONLY)
    cleared = cleared.then(show_batch, [tab.images], [tab.images], **PAGE_ONLY)  # hides the emptied gallery
    if prepare is not None:  # queued, so its errors reach the page as toasts
        cleared = cleared.then(*prepare, api_visibility="private", show_progress="hidden").success
    else:
        cleared = cleared.then
    event = cleared(fn, tab.inputs(), tab.outputs(), api_name=tab.workflow, concurrency_id=GPU_LANE,
                    show_progress_on=[tab.result])
    references = tab.source_images()

    def add_to_history(images: list | None, entries: list[dict], *reference: Any) -> tuple[list[dict], list]:
        """Put a new result (every image of its batch, in seed order) first in this session's history, with
        the reference images it was made from.

        Args:
            images: the batch's images, as (file, caption).
            entries: the history so far.
            reference: the tab's image inputs: the image (Edit, Inpaint), the gallery (Multi-reference,
                Inpaint's references).
        """
        files = [f for value in reference for f in (gallery_paths(value) if isinstance(value, list) else [value])
                 if f]
        with user_errors():
            entries = with_history_entries(entries, gallery_paths(images), files)
        return entries, [(e["path"], e["caption"]) for e in entries]

    def cancel_generation(request: gr.Request) -> None:
        """Stop this visitor's queued or running generation (between denoising steps).

        Args:
            request: whose generation to stop.
        """
        cancellations.cancel(request.session_hash)
        gr.Info("Cancelled.")

    def reuse_seed(seed: float | None):
        """Put the seed used into the seed box and turn randomizing off.

        Args:
            seed: the seed of the last result.
        """
        return (seed, False) if seed is not None else (gr.skip(), gr.skip())

    event.success(show_info, [tab.details], shown, **PAGE_ONLY)
    event.success(show_batch, [tab.images], [tab.images], **PAGE_ONLY)
    event.success(add_to_history, [tab.images, history, *references], [history, history_gallery], **PAGE_ONLY)
    tab.images.select(pick_from_batch, [tab.images, tab.details], [tab.result, tab.seed_used, tab.details, *shown],
                      **PAGE_ONLY)
    tab.cancel.click(cancel_generation, None, None, cancels=[event], api_visibility="private")
    tab.reuse_seed.click(reuse_seed, [tab.seed_used], [tab.seed, tab.randomize_seed], **PAGE_ONLY)
    wire_settings(tab)


def show_info(details: dict | None) -> tuple[str, str, Any]:
    """The page's info line, "Seed used" box and enhanced prompt for the generation's fields.

    Args:
        details: the fields the endpoint returned.
    """
    rewrite = (details or {}).get("enhanced_prompt")
    return (format_info(details), str(details["seed"]) if details else "",
            gr.Textbox(value=rewrite or "", visible=rewrite is not None))


def show_batch(images: list | None) -> gr.Gallery:
    """Show the batch's gallery only when it holds more than one image (one is the result on show).

    Args:
        images: the batch's images, as (file, caption).
    """
    return gr.Gallery(visible=len(images or []) > 1)


def pick_from_batch(images: list | None, details: dict | None, evt: gr.SelectData) -> tuple:
    """Make the clicked image of a batch the current result: the result image, the seed (Reuse seed), the
    info line and what Edit this image / Add to multi-reference / Inpaint this image send.

    Args:
        images: the batch's images, as (file, caption).
        details: the batch's fields (seeds lists each image's seed).
    """
    path, seed, picked = select_from_batch(images, details, evt.index)
    if path is None:
        return (gr.skip(),) * 6
    return (path, seed, picked, *show_info(picked))


def wire_settings(tab: TabControls) -> None:
    """Width and Height move only with Custom size on; the aspect-ratio menu shows sizes at the chosen resolution."""
    with_match_input = tab.reference is not None

    def size_sliders(custom_size: bool):
        """Let the size sliders move only when they are used.

        Args:
            custom_size: the Custom size checkbox.
        """
        return gr.Slider(interactive=bool(custom_size)), gr.Slider(interactive=bool(custom_size))

    def relabel_presets(resolution: str):
        """Show each preset's size at this resolution.

        Args:
            resolution: "1k" or "2k".
        """
        return gr.Dropdown(choices=aspect_choices(resolution, with_match_input))

    tab.custom_size.change(size_sliders, [tab.custom_size], [tab.width, tab.height], **PAGE_ONLY)
    tab.resolution.change(relabel_presets, [tab.resolution], [tab.aspect_ratio], **PAGE_ONLY)


def wire_use_as_input(tab: TabControls, image_input: gr.Image, gallery: gr.Gallery, editor: gr.ImageEditor,
                      tabs: gr.Tabs) -> None:
    """Send a result to the Edit or Inpaint tab, or add it to the Multi-reference gallery."""

    def to_inpaint(path: str | None):
        """Open a result in the Inpaint tab, to paint a mask on.

        Args:
            path: the result's file.
        """
        if not path:
            gr.Warning("Generate an image first.")
            return gr.skip(), gr.skip()
        return path, gr.Tabs(selected="inpaint")

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
        """Add a result to the Multi-reference gallery (at most MAX_REFERENCES).

        Args:
            path: the result's file.
            current: the gallery's images.
        """
        if not path:
            gr.Warning("Generate an image first.")
            return gr.skip(), gr.skip()
        paths = gallery_paths(current)
        if len(paths) >= presets.MAX_REFERENCES:
            gr.Warning(f"Multi-reference takes at most {presets.MAX_REFERENCES} images; remove one first.")
            return gr.skip(), gr.Tabs(selected="multi_reference")
        return paths + [path], gr.Tabs(selected="multi_reference")

    tab.to_edit.click(to_edit, [tab.result], [image_input, tabs], api_visibility="private")
    tab.to_multi.click(to_multi, [tab.result, gallery], [gallery, tabs], api_visibility="private")
    tab.to_inpaint.click(to_inpaint, [tab.result], [editor, tabs], api_visibility="private")


def wire_restore(controls: dict[str, TabControls], tabs: gr.Tabs, history: gr.State, history_gallery: gr.Gallery,
                 settings_image: gr.Image, model_name: str, available_loras: Callable[[], list[str]]) -> None:
    """Click a history item, or drop an image with settings, to fill its tab's controls (and, from history,
    its reference images; the LoRAs this server offers)."""
    every_control = [c for tab in controls.values() for c in tab.restorable()]  # settings, images, LoRA rows
    nothing = {tabs: gr.skip()}  # a non-empty dict: Gradio reads {} as one value for 37 outputs

    def restore_from_history(entries: list[dict], evt: gr.SelectData) -> dict:
        """Restore a history item's prompt, seed and settings in its tab.

        Args:
            entries: this session's history, newest first.
        """
        entry = entries[evt.index]
        workflow = entry.get("workflow", "text_to_image")
        return {**controls[workflow].restore_updates(entry, available_loras()), tabs: gr.Tabs(selected=workflow)}

    def load_settings(path: str | None) -> dict:
        """Fill a tab from the generation settings embedded in an image.

        Args:
            path: an image made by Klein Studio, or one with A1111-style parameters.
        """
        if not path:
            return nothing
        with user_errors():
            settings = settings_from_image(path)
        if not settings:
            gr.Warning("This image carries no generation settings (no Klein Studio or A1111 metadata).")
            return nothing
        workflow = settings.get("workflow") if settings.get("workflow") in controls else "text_to_image"
        made_with = settings.get("model")
        if made_with and made_with != model_name:
            gr.Warning(f"Settings loaded; the image was made with {made_with} and this server runs {model_name}, "
                       "so the same seed gives a different image.")
        else:
            gr.Info(f"Settings loaded from an image made with {made_with or 'an unknown model'}.")
        if workflow == "inpaint":
            gr.Info("The mask is not saved in the image: paint it again on the image to repaint.")
        return {**controls[workflow].restore_updates(settings, available_loras()), tabs: gr.Tabs(selected=workflow)}

    history_gallery.select(restore_from_history, [history], every_control + [tabs], **PAGE_ONLY)
    # Queued, because gr.Info / gr.Warning reach the page only through the queue.
    settings_image.upload(load_settings, [settings_image], every_control + [tabs], api_visibility="private",
                          show_progress="hidden")
