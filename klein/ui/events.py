"""The page's helper events, private to the page (not in the API): history, Cancel, Reuse seed,
Edit this image / Add to multi-reference, restoring settings from history or from an image."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from .. import presets
from ..output.encode import settings_from_image
from .controls import TabControls
from .endpoints import user_errors
from .state import Cancellations, gallery_paths, with_history_entry

GPU_LANE = "gpu"  # every generating event shares it, so two tabs never run the model at once


def wire_tab(tab: TabControls, fn: Callable, history: gr.State, history_gallery: gr.Gallery,
             cancellations: Cancellations) -> None:
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

    def reuse_seed(seed: float | None):
        """Put the seed used into the seed box and turn randomizing off.

        Args:
            seed: the seed of the last result.
        """
        return (seed, False) if seed is not None else (gr.skip(), gr.skip())

    event.success(add_to_history, [tab.result, history], [history, history_gallery],
                  api_visibility="private", queue=False)
    tab.cancel.click(cancel_generation, None, None, cancels=[event], api_visibility="private")
    tab.reuse_seed.click(reuse_seed, [tab.seed_used], [tab.seed, tab.randomize_seed], api_visibility="private",
                         queue=False)


def wire_use_as_input(tab: TabControls, image_input: gr.Image, gallery: gr.Gallery, tabs: gr.Tabs) -> None:
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


def wire_restore(controls: dict[str, TabControls], tabs: gr.Tabs, history: gr.State, history_gallery: gr.Gallery,
                 settings_image: gr.Image, model_name: str) -> None:
    """Click a history item, or drop an image with settings, to fill its tab's controls."""
    every_control = [c for tab in controls.values() for c in tab.settings()]

    def restore_from_history(entries: list[dict], evt: gr.SelectData) -> dict:
        """Restore a history item's prompt, seed and settings in its tab.

        Args:
            entries: this session's history, newest first.
        """
        entry = entries[evt.index]
        workflow = entry.get("workflow", "text_to_image")
        return {**controls[workflow].restore_updates(entry), tabs: gr.Tabs(selected=workflow)}

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
        if made_with and made_with != model_name:
            gr.Warning(f"Settings loaded; the image was made with {made_with} and this server runs {model_name}, "
                       "so the same seed gives a different image.")
        else:
            gr.Info(f"Settings loaded from an image made with {made_with or 'an unknown model'}.")
        return {**controls[workflow].restore_updates(settings), tabs: gr.Tabs(selected=workflow)}

    history_gallery.select(restore_from_history, [history], every_control + [tabs],
                           api_visibility="private", queue=False)
    # Queued, because gr.Info / gr.Warning reach the page only through the queue.
    settings_image.upload(load_settings, [settings_image], every_control + [tabs], api_visibility="private")
