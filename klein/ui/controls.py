"""The controls of one workflow tab: prompt, presets, seed, format, safety, the Advanced accordion and
the result, typed and named after the endpoint parameters they feed (SETTING_NAMES)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from .. import presets
from ..config import Limits, ModelSpec
from ..errors import InvalidRequest
from ..images import too_many_pixels, unreadable_image
from ..presets import PARAMETERS
from .state import SETTING_NAMES, settings_to_restore

ReferenceInput = gr.Image | gr.Gallery | None


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


def parameter_slider(name: str, maximum: float | None = None, **kwargs: Any) -> gr.Slider:
    """A slider over a parameter's range from the table in presets.py."""
    parameter = PARAMETERS[name]
    top = parameter.maximum if maximum is None else maximum
    return named_slider(name, parameter.minimum, top, **kwargs)


def named_image(field: str, limits: Limits, **kwargs: Any) -> gr.Image:
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


@dataclass
class TabControls:
    """The components of one workflow tab; the settings fields are named as SETTING_NAMES."""

    workflow: str
    reference: ReferenceInput
    prompt: gr.Textbox
    aspect_ratio: gr.Dropdown
    resolution: gr.Dropdown
    seed: gr.Number
    randomize_seed: gr.Checkbox
    output_format: gr.Dropdown
    custom_size: gr.Checkbox
    width: gr.Slider
    height: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    safety_tolerance: gr.Slider
    generate: gr.Button
    cancel: gr.Button
    result: gr.Image
    seed_used: gr.Number
    reuse_seed: gr.Button
    to_edit: gr.Button
    to_multi: gr.Button
    info: gr.Markdown

    def settings(self) -> list[gr.components.Component]:
        """The controls of SETTING_NAMES, in that order: the endpoint's parameters after the reference."""
        return [getattr(self, name) for name in SETTING_NAMES]

    def inputs(self) -> list[gr.components.Component]:
        """The endpoint's inputs, in the order of its API parameters."""
        return ([self.reference] if self.reference is not None else []) + self.settings()

    def restore_updates(self, recorded: dict[str, Any]) -> dict:
        """Fill the settings from recorded ones (a history entry or image metadata)."""
        values = settings_to_restore(recorded, with_match_input=self.reference is not None,
                                     max_steps=int(self.steps.maximum), max_tolerance=int(self.safety_tolerance.maximum))
        return {getattr(self, name): value for name, value in values.items()}


def workflow_tab(workflow: str, reference: ReferenceInput, spec: ModelSpec, max_tolerance: int) -> TabControls:
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
                output_format = gr.Dropdown(list(presets.OUTPUT_FORMATS), value=presets.DEFAULT_OUTPUT_FORMAT,
                                            label="Format", allow_custom_value=True)
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, elem_id=f"{workflow}-seed")
                randomize_seed = gr.Checkbox(label="Randomize seed", value=True, elem_id=f"{workflow}-randomize")
            safety_tolerance = parameter_slider(
                "safety_tolerance", maximum=max_tolerance, step=1,
                value=min(presets.DEFAULT_SAFETY_TOLERANCE, max_tolerance),
                label="Safety tolerance (0 strictest, 5 most permissive)", elem_id=f"{workflow}-safety")
            with gr.Accordion("Advanced", open=False):
                custom_size = gr.Checkbox(label="Custom size (overrides the preset)", value=False)
                with gr.Row():
                    width = parameter_slider("width", value=PARAMETERS["width"].default, step=presets.SIZE_MULTIPLE,
                                             label="Width")
                    height = parameter_slider("height", value=PARAMETERS["height"].default,
                                              step=presets.SIZE_MULTIPLE, label="Height")
                steps = parameter_slider("steps", maximum=presets.DISTILLED_MAX_STEPS if spec.distilled else None,
                                         value=spec.steps, step=1, label="Steps", elem_id=f"{workflow}-steps")
                guidance = parameter_slider("guidance", value=spec.guidance, step=0.1, label="Guidance",
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
    return TabControls(
        workflow=workflow, reference=reference, prompt=prompt, aspect_ratio=aspect_ratio, resolution=resolution,
        seed=seed, randomize_seed=randomize_seed, output_format=output_format, custom_size=custom_size, width=width,
        height=height, steps=steps, guidance=guidance, safety_tolerance=safety_tolerance, generate=generate,
        cancel=cancel, result=result, seed_used=seed_used, reuse_seed=reuse_seed, to_edit=to_edit, to_multi=to_multi,
        info=info)
