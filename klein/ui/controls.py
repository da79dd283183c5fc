"""The controls of one workflow tab: prompt, Generate, presets, seed, format, safety, the Advanced
accordion and the result, typed and named after the endpoint parameters they feed (SETTING_NAMES)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import presets
from ..config import ModelSpec
from ..presets import PARAMETERS
from .display import aspect_choices
from .endpoints import Endpoint
from .inputs import parameter_slider, whole_number_input
from .loras import LoraPicker, lora_picker
from .state import SETTING_NAMES, settings_to_restore

ReferenceInput = gr.Image | gr.Gallery | gr.ImageEditor | None
ENHANCE_NOTE = "The text encoder reads only the prompt, not the images: the rewrite is made from your words alone."


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
    num_images: gr.Slider
    generate: gr.Button
    cancel: gr.Button
    result: gr.Image  # the current result: the batch's first image, or the one picked in `images`
    images: gr.Gallery  # every image of the batch, captioned with its seed: the endpoint's fourth output
    seed_used: gr.Number  # the endpoint's second output (hidden: Gradio's Number shows 0 for "none yet")
    seed_shown: gr.Textbox  # the page's "Seed used" box, empty until a result arrives
    reuse_seed: gr.Button
    to_edit: gr.Button
    to_multi: gr.Button
    to_inpaint: gr.Button
    info: gr.Markdown  # the page's line
    details: gr.JSON  # the same as fields: the endpoint's third output, for API and MCP callers (hidden)
    loras: gr.JSON  # the endpoint's `loras` (hidden), composed from lora_picker's rows as Generate is clicked
    lora_picker: LoraPicker
    enhance_prompt: gr.Checkbox
    enhanced_prompt: gr.Textbox  # the rewrite generated from, shown beside the result when asked for
    strength: gr.Slider | None = None  # inpainting only
    parameters: tuple[str, ...] = SETTING_NAMES  # the endpoint's parameters, in API order
    extra: dict[str, Any] = field(default_factory=dict)  # inputs that are not settings: the images, the mask

    def control(self, name: str) -> gr.components.Component:
        return self.extra[name] if name in self.extra else getattr(self, name)

    def inputs(self) -> list[gr.components.Component]:
        """The endpoint's inputs, in the order of its API parameters."""
        return [self.control(name) for name in self.parameters]

    def source_images(self) -> list[gr.components.Component]:
        """The inputs holding the images a result was made from (for its history entry), in request order."""
        return [self.control(name) for name in ("image", "images", "references") if name in self.parameters]

    def outputs(self) -> list[gr.components.Component]:
        """The endpoint's outputs: the first image, its seed, info fields, every image of the batch."""
        return [self.result, self.seed_used, self.details, self.images]

    def restorable(self) -> list[gr.components.Component]:
        """Every control restore_updates may fill: the inputs, the image painted on, the LoRA rows."""
        shown = [self.reference] if self.reference is not None and self.reference not in self.inputs() else []
        return self.inputs() + shown + self.lora_picker.rows()

    def restore_updates(self, recorded: dict[str, Any], available_loras: list[str] = ()) -> dict:
        """Fill the settings (and the reference images, when recorded; the LoRAs this server offers) from a
        history entry or image metadata. A recorded LoRA it cannot offer is named in a warning."""
        values = settings_to_restore(recorded, with_match_input=self.reference is not None,
                                     max_steps=int(self.steps.maximum), max_tolerance=int(self.safety_tolerance.maximum))
        updates: dict = {self.control(name): value for name, value in values.items() if name in self.parameters}
        references = recorded.get("references")
        if self.reference is not None and isinstance(references, list) and references:
            updates[self.reference] = references if isinstance(self.reference, gr.Gallery) else references[0]
            if "references" in self.parameters:
                updates[self.extra["references"]] = references[1:] or None
        loras, missing = self.lora_picker.restore_updates(recorded.get("loras"), list(available_loras))
        if missing:
            gr.Warning(f"LoRA {', '.join(missing)} is not in this server's LoRA folder; left out.")
        return updates | loras


def workflow_tab(endpoint: Endpoint, reference: ReferenceInput, spec: ModelSpec, max_tolerance: int,
                 available_loras: list[str], extra: dict[str, Any] | None = None) -> TabControls:
    """Prompt and Generate first (on a phone they fit the first screen), then the settings; the result beside.
    A workflow without size settings (inpainting) gets none shown, and a strength slider instead."""
    workflow = endpoint.api_name
    sized = "aspect_ratio" in endpoint.parameters
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=320):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the image… (Enter generates, "
                                "Shift+Enter adds a line)", elem_id=f"{workflow}-prompt")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id=f"{workflow}-generate", scale=3,
                                     min_width=120)
                cancel = gr.Button("Cancel", variant="stop", elem_id=f"{workflow}-cancel", scale=1, min_width=80)
            strength = parameter_slider("strength", value=float(PARAMETERS["strength"].default), step=0.05,
                                        label="Strength (1 repaints the masked area anew; lower keeps more of it)",
                                        elem_id=f"{workflow}-strength") if "strength" in endpoint.parameters else None
            with gr.Row():
                # allow_custom_value lets the engine reject a bad value with a message naming the field.
                # The menu is wide enough for its longest label; on a phone it takes a row of its own.
                aspect_ratio = gr.Dropdown(aspect_choices("1k", with_match_input=reference is not None),
                                           value=presets.MATCH_INPUT if reference is not None else "square_1_1",
                                           label="Aspect ratio", allow_custom_value=True, elem_id=f"{workflow}-aspect",
                                           scale=3, min_width=250, visible=sized)
                resolution = gr.Dropdown(list(presets.RESOLUTIONS), value="1k", label="Resolution",
                                         allow_custom_value=True, min_width=90, visible=sized)
                output_format = gr.Dropdown(list(presets.OUTPUT_FORMATS), value=presets.DEFAULT_OUTPUT_FORMAT,
                                            label="Format", allow_custom_value=True, min_width=90,
                                            elem_id=f"{workflow}-format")
            with gr.Row():
                seed = whole_number_input("seed", label="Seed", value=0, elem_id=f"{workflow}-seed")
                randomize_seed = gr.Checkbox(label="Randomize seed", value=True, elem_id=f"{workflow}-randomize")
            num_images = parameter_slider("num_images", value=presets.NUM_IMAGES.default, step=1,
                                          label="Number of images (image i uses seed + i)",
                                          elem_id=f"{workflow}-num-images")
            safety_tolerance = parameter_slider(
                "safety_tolerance", maximum=max_tolerance, step=1,
                value=min(presets.DEFAULT_SAFETY_TOLERANCE, max_tolerance),
                label="Safety tolerance (0 strictest, 5 most permissive)", elem_id=f"{workflow}-safety")
            enhance_prompt = gr.Checkbox(label="Enhance prompt (the model's text encoder rewrites it first)",
                                         value=False, elem_id=f"{workflow}-enhance")
            if reference is not None:
                gr.Markdown(ENHANCE_NOTE, elem_classes=["enhance-note"])
            picker = lora_picker(workflow, available_loras)
            with gr.Accordion("Advanced", open=False):
                custom_size = gr.Checkbox(label="Custom size (overrides the preset)", value=False,
                                          elem_id=f"{workflow}-custom-size", visible=sized)
                with gr.Row(visible=sized):  # movable only with Custom size on (events.wire_settings)
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
            # Shown only for a batch of more than one image (events.wire_tab); a click makes one the result.
            images = gr.Gallery(label="Images", type="filepath", columns=presets.MAX_NUM_IMAGES, height=200,
                                fit_columns=False, allow_preview=False, object_fit="contain", interactive=False,
                                visible=False, elem_id=f"{workflow}-images", elem_classes=["batch-images"])
            with gr.Row():
                seed_used = gr.Number(label="Seed used", precision=0, interactive=False, visible=False)
                seed_shown = gr.Textbox(label="Seed used", interactive=False, placeholder="—", max_lines=1,
                                        elem_id=f"{workflow}-seed-used")
                reuse_seed = gr.Button("♻ Reuse seed", size="sm", elem_id=f"{workflow}-reuse-seed")
            with gr.Row():
                to_edit = gr.Button("Edit this image", size="sm", elem_id=f"{workflow}-to-edit")
                to_multi = gr.Button("Add to multi-reference", size="sm", elem_id=f"{workflow}-to-multi")
                to_inpaint = gr.Button("Inpaint this image", size="sm", elem_id=f"{workflow}-to-inpaint")
            info = gr.Markdown(elem_id=f"{workflow}-info")
            enhanced_prompt = gr.Textbox(label="Enhanced prompt (what the image was generated from)", visible=False,
                                         interactive=False, lines=3, elem_id=f"{workflow}-enhanced")
            details = gr.JSON(label="Generation info", visible=False)
    return TabControls(
        workflow=workflow, reference=reference, prompt=prompt, aspect_ratio=aspect_ratio, resolution=resolution,
        seed=seed, randomize_seed=randomize_seed, output_format=output_format, custom_size=custom_size, width=width,
        height=height, steps=steps, guidance=guidance, safety_tolerance=safety_tolerance, num_images=num_images,
        generate=generate, cancel=cancel, result=result, images=images, seed_used=seed_used, seed_shown=seed_shown,
        reuse_seed=reuse_seed, to_edit=to_edit, to_multi=to_multi, to_inpaint=to_inpaint, info=info, details=details,
        loras=picker.value, lora_picker=picker, enhance_prompt=enhance_prompt, enhanced_prompt=enhanced_prompt,
        strength=strength, parameters=endpoint.parameters,
        extra=extra or ({endpoint.reference: reference} if endpoint.reference else {}))
