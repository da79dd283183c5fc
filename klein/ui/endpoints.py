"""The four workflow endpoints (text_to_image, edit, multi_reference, inpaint), generated from one description.

Gradio reads an event function's signature for the API's parameter names, and its docstring's Args
for the API page and the MCP tool descriptions; the defaults API and MCP callers get are the
signature's too (with_signature_defaults), not the page controls' initial values. Each endpoint's signature and
docstring are built here from ENDPOINTS and SETTING_NAMES with the descriptions of the parameter table
(presets.PARAMETERS), so adding a parameter is one change, and the controls feeding it (TabControls)
follow the same names.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import presets
from ..config import ModelSpec
from ..errors import KleinError
from ..presets import PARAMETERS
from .state import INPAINT_SETTING_NAMES, SETTING_NAMES

log = logging.getLogger(__name__)

# (first image file, its seed, info fields, every image as (file, caption)): the first three as before batches
Outputs = tuple[str, int, dict, list[tuple[str, str]]]
# (the endpoint's argument values by name, gr.Progress, gr.Request) -> Outputs
Handler = Callable[[dict[str, Any], Any, Any], Outputs]


@dataclass(frozen=True)
class Endpoint:
    """One workflow as an API endpoint and MCP tool."""

    api_name: str  # the Gradio API name and the tab's id
    tool_name: str  # the function's name: the MCP tool name
    summary: str
    reference: str | None  # the reference parameter's name, if the workflow takes images
    reference_doc: str
    aspect_ratio_doc: str
    prompt_doc: str
    returns: str
    settings: tuple[str, ...] = SETTING_NAMES  # the settings it takes after the reference
    inputs: tuple[tuple[str, str], ...] = ()  # (name, doc): more inputs after the reference (inpaint's mask)
    extras: tuple[tuple[str, str], ...] = ()  # (name, doc): optional inputs after the settings

    @property
    def parameters(self) -> tuple[str, ...]:
        """The API parameters' names, in order: what the tab's controls feed. num_images comes last, so a
        caller passing the older parameters by position is not shifted."""
        reference = (self.reference,) if self.reference else ()
        return (*reference, *(n for n, _ in self.inputs), *self.settings, *(n for n, _ in self.extras),
                *BATCH_NAMES)


BATCH_NAMES = ("num_images",)
RETURNS = ("its seed, the generation's fields as JSON (seed, width, height, model, workflow, steps, guidance, "
           "output_format, timings_ms; loras and enhanced_prompt when used; seeds: every image's seed, in order; "
           "moderated_seeds: the seeds of images moderation left out), and every image of the batch in seed "
           'order, each {"image": file, "caption": "seed N"} (the first one again). Over MCP each image comes once, '
           "as image content, before the seed and the fields.")
FILE_DOC = "gradio_client: handle_file(path or URL); MCP: an http(s) URL or a data URI"
IMAGES_DOC = 'each {"image": file, "caption": null} (file: ' + FILE_DOC + ")"

ENDPOINTS = (
    Endpoint("text_to_image", "text_to_image", "Generate an image from a text prompt with FLUX.2 [klein].",
             None, "", "a preset such as square_1_1, widescreen_16_9, landscape or portrait.",
             "what the image should show.", f"The (first) image file, {RETURNS}"),
    Endpoint("edit", "edit_image", "Edit an image with a text instruction with FLUX.2 [klein].",
             "image", f"the image to edit (PNG, JPEG or WebP, at least 64 px a side, aspect at most 8:1; {FILE_DOC}).",
             '"match_input" keeps the input\'s aspect ratio; or a preset such as square_1_1.',
             'the edit to make, e.g. "make it night time".', f"The (first) edited image file, {RETURNS}"),
    Endpoint("multi_reference", "multi_reference_image",
             f"Generate an image from {presets.MULTI_REFERENCE_MIN} to {presets.MAX_REFERENCES} reference images and "
             "a prompt with FLUX.2 [klein].",
             "images", f"{presets.MULTI_REFERENCE_MIN} to {presets.MAX_REFERENCES} reference images (PNG, JPEG or "
             f"WebP), e.g. a person, a product and a place; {IMAGES_DOC}.",
             '"match_input" uses the first image\'s aspect ratio; or a preset such as landscape.',
             'how to combine them, e.g. "the person from image 1 holding the cup from image 2".',
             f"The (first) generated image file, {RETURNS}"),
    Endpoint("inpaint", "inpaint_image",
             "Repaint the masked part of an image from a prompt with FLUX.2 [klein]; the rest stays as it is.",
             "image", f"the image to paint on (PNG, JPEG or WebP; the output has its size; {FILE_DOC}).", "",
             'what the masked area should show, e.g. "a red door".', f"The (first) inpainted image file, {RETURNS}",
             settings=INPAINT_SETTING_NAMES,
             inputs=(("mask", "the mask, the image's size: white repaints, black keeps (grayscale or black and white; "
                      f"transparent areas keep; {FILE_DOC})."),),
             extras=(("references", f"optional: 1 to {presets.MAX_REFERENCES - 1} reference images for the painted "
                      f"area, e.g. an object to put there; {IMAGES_DOC}."),)),
)

# What the UI adds to the table's parameters: how each arrives from its control, and its description.
# An API or MCP caller's defaults differ from the page's controls: a seed given is the seed used
# (randomize_seed is off unless asked for), and a width and height given are the size used.
CONTROL_DOCS = {
    "randomize_seed": "true: a random seed even when one is given (the page's checkbox); the seed used is "
                      "returned either way.",
    "custom_size": "true: width and height; false: the preset (width and height ignored); left out: width and "
                   "height when given.",
    "loras": f"up to {presets.MAX_LORAS} LoRA adapters, a list of {{\"path\": ..., \"scale\": ...}}: path a "
             ".safetensors file or folder in the server's LoRA folder, or a Hugging Face hub id (owner/name); scale "
             f"{presets.LORA_SCALE.minimum:g}..{presets.LORA_SCALE.maximum:g} (1 as trained, 0 off).",
    "enhance_prompt": "true: the model's text encoder rewrites the prompt first (it reads only the text, not the "
                      "images); the rewrite is returned as enhanced_prompt.",
}
CONTROL_TYPES: dict[str, Any] = {"prompt": str, "aspect_ratio": str, "resolution": str, "seed": int | None,
                                 "randomize_seed": bool, "output_format": str, "custom_size": bool | None,
                                 "width": float | None, "height": float | None, "loras": list | None,
                                 "enhance_prompt": bool, "image": str | None, "mask": str | None,
                                 "images": list | None, "references": list | None}
CONTROL_DEFAULTS: dict[str, Any] = {"seed": None, "randomize_seed": False, "custom_size": None, "width": None,
                                    "height": None, "loras": None, "enhance_prompt": False, "references": None}
REQUIRED = ("prompt", "image", "mask", "images")


def parameter_defaults(endpoint: Endpoint, spec: ModelSpec) -> dict[str, Any]:
    """Each parameter's default, from the table and the loaded model (absent: required)."""
    defaults = {name: PARAMETERS[name].default for name in endpoint.parameters if name in PARAMETERS}
    defaults.update(CONTROL_DEFAULTS, steps=spec.steps, guidance=spec.guidance,
                    aspect_ratio=presets.MATCH_INPUT if endpoint.reference else PARAMETERS["aspect_ratio"].default)
    return {name: defaults[name] for name in endpoint.parameters if name not in REQUIRED}


def docstring(endpoint: Endpoint) -> str:
    """Summary, Args (one line a parameter) and Returns, in the Google style Gradio parses."""
    docs = {name: CONTROL_DOCS.get(name) or (PARAMETERS[name].doc if name in PARAMETERS else "")
            for name in endpoint.settings}
    docs.update(prompt=endpoint.prompt_doc)
    if "aspect_ratio" in docs:
        docs.update(aspect_ratio=endpoint.aspect_ratio_doc)
    docs = {**({endpoint.reference: endpoint.reference_doc} if endpoint.reference else {}), **dict(endpoint.inputs),
            **docs, **dict(endpoint.extras), **{name: PARAMETERS[name].doc for name in BATCH_NAMES}}
    args = "\n".join(f"    {name}: {doc}" for name, doc in docs.items())
    return f"{endpoint.summary}\n\nArgs:\n{args}\n\nReturns:\n    {endpoint.returns}\n"


def make_endpoint(endpoint: Endpoint, spec: ModelSpec, handle: Handler) -> Callable[..., Outputs]:
    """The Gradio event function of one workflow: its signature and docstring built from the table,
    its body `handle(values, progress, request)` inside user_errors()."""
    defaults = parameter_defaults(endpoint, spec)
    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=defaults.get(name, inspect.Parameter.empty),
                                    annotation=CONTROL_TYPES.get(name, float))
                  for name in endpoint.parameters]
    parameters += [
        inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()),
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
    ]
    signature = inspect.Signature(parameters, return_annotation=Outputs)

    def event(*args: Any, **kwargs: Any) -> Outputs:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        progress, request = values.pop("progress"), values.pop("request")
        with user_errors():
            return handle(values, progress, request)

    event.__name__ = event.__qualname__ = endpoint.tool_name
    event.__signature__ = signature  # type: ignore[attr-defined]
    event.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not inspect.Parameter.empty}
    event.__annotations__["return"] = Outputs
    event.__doc__ = docstring(endpoint)
    return event


def with_signature_defaults(get_api_info: Callable[..., dict], functions: dict[str, Callable]) -> Callable[..., dict]:
    """Blocks.get_api_info, with each endpoint parameter's default taken from the endpoint's signature.

    Gradio takes a parameter's default from its control's initial value, which is the page's: the
    Randomize checkbox on, a seed of 0, the size sliders at 1024. API and MCP callers get the
    signature's instead (no seed: random; a seed given: that seed; width and height only when given),
    and a parameter without a default (the prompt, the images) is required.
    """

    @functools.wraps(get_api_info)
    def api_info(*args: Any, **kwargs: Any) -> dict:
        info = get_api_info(*args, **kwargs)
        for api_name, fn in functions.items():
            endpoint = info.get("named_endpoints", {}).get(f"/{api_name}")
            signature = inspect.signature(fn).parameters
            for parameter in endpoint["parameters"] if endpoint else []:
                declared = signature.get(parameter["parameter_name"])
                if declared is not None:
                    has_default = declared.default is not inspect.Parameter.empty
                    parameter.update(parameter_has_default=has_default,
                                     parameter_default=declared.default if has_default else None)
        return info

    return api_info


@contextmanager
def user_errors() -> Iterator[None]:
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
