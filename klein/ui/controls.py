"""The controls of one workflow tab: prompt, Generate, presets, seed, format, safety, the Advanced
accordion and the result, typed and named after the endpoint parameters they feed (SETTING_NAMES)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import presets
from ..config import ModelSpec
from ..presets import PARAMETERS
from .display import aspect_choices
from .inputs import parameter_slider, whole_number_input
from .state import SETTING_NAMES, settings_to_restore

ReferenceInput = gr.Image | gr.Gallery | None


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
    seed_used: gr.Number  # the endpoint's second output (hidden: Gradio's Number shows 0 for "none yet")
    seed_shown: gr.Textbox  # the page's "Seed used" box, empty until a result arrives
    reuse_seed: gr.Button
    to_edit: gr.Button
    to_multi: gr.Button
    info: gr.Markdown  # the page's line
    details: gr.JSON  # the same as fields: the endpoint's third output, for API and MCP callers (hidden)

    def settings(self) -> list[gr.components.Component]:
        """The controls of SETTING_NAMES, in that order: the endpoint's parameters after the reference."""
        return [getattr(self, name) for name in SETTING_NAMES]

    def inputs(self) -> list[gr.components.Component]:
        """The endpoint's inputs, in the order of its API parameters."""
        return ([self.reference] if self.reference is not None else []) + self.settings()

    def outputs(self) -> list[gr.components.Component]:
        """The endpoint's outputs: image, seed used, info fields."""
        return [self.result, self.seed_used, self.details]

    def restore_updates(self, recorded: dict[str, Any]) -> dict:
        """Fill the settings (and the reference images, when recorded) from a history entry or image metadata."""
        values = settings_to_restore(recorded, with_match_input=self.reference is not None,
                                     max_steps=int(self.steps.maximum), max_tolerance=int(self.safety_tolerance.maximum))
        updates: dict = {getattr(self, name): value for name, value in values.items()}
        references = recorded.get("references")
        if self.reference is not None and references:
            updates[self.reference] = references if isinstance(self.reference, gr.Gallery) else references[0]
        return updates


def workflow_tab(workflow: str, reference: ReferenceInput, spec: ModelSpec, max_tolerance: int) -> TabControls:
    """Prompt and Generate first (on a phone they fit the first screen), then the settings; the result beside."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the image… (Enter generates, "
                                "Shift+Enter adds a line)", elem_id=f"{workflow}-prompt")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id=f"{workflow}-generate", scale=3,
                                     min_width=120)
                cancel = gr.Button("Cancel", variant="stop", elem_id=f"{workflow}-cancel", scale=1, min_width=80)
            with gr.Row():
                # allow_custom_value lets the engine reject a bad value with a message naming the field.
                # The menu is wide enough for its longest label; on a phone it takes a row of its own.
                aspect_ratio = gr.Dropdown(aspect_choices("1k", with_match_input=reference is not None),
                                           value=presets.MATCH_INPUT if reference is not None else "square_1_1",
                                           label="Aspect ratio", allow_custom_value=True, elem_id=f"{workflow}-aspect",
                                           scale=3, min_width=250)
                resolution = gr.Dropdown(list(presets.RESOLUTIONS), value="1k", label="Resolution",
                                         allow_custom_value=True, min_width=90)
                output_format = gr.Dropdown(list(presets.OUTPUT_FORMATS), value=presets.DEFAULT_OUTPUT_FORMAT,
                                            label="Format", allow_custom_value=True, min_width=90)
            with gr.Row():
                seed = whole_number_input("seed", label="Seed", value=0, elem_id=f"{workflow}-seed")
                randomize_seed = gr.Checkbox(label="Randomize seed", value=True, elem_id=f"{workflow}-randomize")
            safety_tolerance = parameter_slider(
                "safety_tolerance", maximum=max_tolerance, step=1,
                value=min(presets.DEFAULT_SAFETY_TOLERANCE, max_tolerance),
                label="Safety tolerance (0 strictest, 5 most permissive)", elem_id=f"{workflow}-safety")
            with gr.Accordion("Advanced", open=False):
                custom_size = gr.Checkbox(label="Custom size (overrides the preset)", value=False,
                                          elem_id=f"{workflow}-custom-size")
                with gr.Row():  # movable only with Custom size on (events.wire_settings)
                    width = parameter_slider("width", value=PARAMETERS["width"].default, step=presets.SIZE_MULTIPLE,
                                             label="Width", interactive=False, elem_id=f"{workflow}-width")
                    height = parameter_slider("height", value=PARAMETERS["height"].default,
                                              step=presets.SIZE_MULTIPLE, label="Height", interactive=False,
                                              elem_id=f"{workflow}-height")
                steps = parameter_slider("steps", maximum=presets.DISTILLED_MAX_STEPS if spec.distilled else None,
                                         value=spec.steps, step=1, label="Steps", elem_id=f"{workflow}-steps")
                guidance = parameter_slider("guidance", value=spec.guidance, step=0.1, label="Guidance",
                                            visible=not spec.distilled)
        with gr.Column(scale=1, min_width=320):
            result = gr.Image(label="Result", type="filepath", interactive=False, elem_id=f"{workflow}-result",
                              buttons=["download", "fullscreen"])
            with gr.Row():
                seed_used = gr.Number(label="Seed used", precision=0, interactive=False, visible=False)
                seed_shown = gr.Textbox(label="Seed used", interactive=False, placeholder="—", max_lines=1,
                                        elem_id=f"{workflow}-seed-used")
                reuse_seed = gr.Button("♻ Reuse seed", size="sm", elem_id=f"{workflow}-reuse-seed")
            with gr.Row():
                to_edit = gr.Button("Edit this image", size="sm", elem_id=f"{workflow}-to-edit")
                to_multi = gr.Button("Add to multi-reference", size="sm", elem_id=f"{workflow}-to-multi")
            info = gr.Markdown(elem_id=f"{workflow}-info")
            details = gr.JSON(label="Generation info", visible=False)
    return TabControls(
        workflow=workflow, reference=reference, prompt=prompt, aspect_ratio=aspect_ratio, resolution=resolution,
        seed=seed, randomize_seed=randomize_seed, output_format=output_format, custom_size=custom_size, width=width,
        height=height, steps=steps, guidance=guidance, safety_tolerance=safety_tolerance, generate=generate,
        cancel=cancel, result=result, seed_used=seed_used, seed_shown=seed_shown, reuse_seed=reuse_seed,
        to_edit=to_edit, to_multi=to_multi, info=info, details=details)
