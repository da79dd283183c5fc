"""The Inpaint tab: an image editor whose brush paints the mask, an optional mask file, references.

The page's Generate first turns the editor into the /inpaint endpoint's plain inputs (editor_inputs: the
image as a PNG, the painted pixels as a white-on-black mask) in hidden image inputs, so API and MCP
callers give the same two files the page sends.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image

from .. import presets
from ..config import Limits, ModelSpec
from ..errors import InvalidRequest
from ..images import load_reference
from .controls import TabControls, workflow_tab
from .endpoints import ENDPOINTS
from .inputs import field_error, named_gallery, named_image

INPAINT = next(e for e in ENDPOINTS if e.api_name == "inpaint")
BRUSH = gr.Brush(colors=["#ffffff", "#ff3d7f"], default_color="#ffffff", color_mode="fixed", default_size=24)
MASK_NOTE = ("Paint over what should change (any brush colour: painted pixels repaint, the rest stays exactly as "
             "it is), or give a mask file. The mask is not saved in the result: History and Load settings bring "
             "back the prompt, seed and settings, not the mask.")


@dataclass
class InpaintTab:
    controls: TabControls
    editor: gr.ImageEditor
    mask_file: gr.Image

    def prepare(self) -> tuple:
        """The step before the endpoint (events.wire_tab): editor and mask file -> the image and mask inputs."""
        return editor_inputs, [self.editor, self.mask_file], [self.controls.extra["image"], self.controls.extra["mask"]]


def painted_mask(layers: list[Image.Image] | None, size: tuple[int, int]) -> Image.Image | None:
    """White where any layer has paint (alpha above 0), black elsewhere; None when nothing is painted."""
    painted = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers or []:
        if layer is None:
            continue
        alpha = np.asarray(layer.convert("RGBA").resize(size, Image.NEAREST))[..., 3]
        painted |= alpha > 0
    return Image.fromarray(painted.astype(np.uint8) * 255, "L") if painted.any() else None


def editor_inputs(editor: dict | None, mask_file: str | None) -> tuple[Image.Image, Image.Image | str]:
    """The image painted on and its mask, from the editor's layers and an optional mask file (both: their union).

    Args:
        editor: the ImageEditor's value: background (the image), layers (the brush strokes), composite.
        mask_file: an uploaded black-and-white mask, white repaints.
    """
    background = (editor or {}).get("background")
    if background is None:
        raise field_error("image", "is missing; upload the image to paint on")
    try:  # the app's limits and its 1 MP rule, transparency on white, as for every other image
        image = load_reference(background, "image", full_size=True)
        painted = painted_mask((editor or {}).get("layers"), image.size)
        if painted is None and not mask_file:
            raise field_error("mask", "nothing is painted; paint over the area to repaint, or give a mask file")
        if painted is None:
            return image, mask_file  # checked by the endpoint, as an API caller's is
        uploaded = load_reference(mask_file, "mask", mask=True, full_size=True) if mask_file else None  # colour refused here too
    except InvalidRequest as exc:
        raise field_error(exc.field, str(exc).removeprefix(f"{exc.field}: ")) from None
    if uploaded is not None:
        if uploaded.size != image.size:
            raise field_error("mask", f"is {uploaded.width}x{uploaded.height}; it must be the image's size, "
                              f"{image.width}x{image.height}")
        painted = Image.fromarray(np.maximum(np.asarray(painted), np.asarray(uploaded)), "L")
    return image, painted


def inpaint_tab(spec: ModelSpec, max_tolerance: int, limits: Limits, available_loras: list[str]) -> InpaintTab:
    """The tab's inputs above the usual controls (workflow_tab)."""
    with gr.Row():
        editor = gr.ImageEditor(label="Image: paint over the area to repaint", type="pil", image_mode="RGBA",
                                sources=["upload", "clipboard"], layers=False, brush=BRUSH,
                                eraser=gr.Eraser(default_size=24), transforms=(), format="png", height=440,
                                elem_id="inpaint-editor", scale=3)
        with gr.Column(scale=1, min_width=200):
            mask_file = named_image("mask", limits, label="Mask file (optional: white repaints)", type="filepath",
                                    image_mode=None, sources=["upload"], height=160, elem_id="inpaint-mask-file")
            references = named_gallery("references", label=f"References (optional, up to "
                                       f"{presets.MAX_REFERENCES - 1})", interactive=True, columns=3, height=160,
                                       fit_columns=False, object_fit="contain", elem_id="inpaint-references")
    gr.Markdown(MASK_NOTE, elem_id="inpaint-note")
    # The endpoint's image and mask: filled from the editor as Generate is clicked; PNG, so nothing is lost.
    image = named_image("image", limits, type="filepath", format="png", image_mode=None, visible=False)
    mask = named_image("mask", limits, type="filepath", format="png", image_mode=None, visible=False)
    controls = workflow_tab(INPAINT, editor, spec, max_tolerance, available_loras,
                            extra={"image": image, "mask": mask, "references": references})
    return InpaintTab(controls, editor, mask_file)
