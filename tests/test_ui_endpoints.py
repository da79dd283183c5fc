"""The workflow endpoints are generated from one description: signature, docstring (the API and MCP
descriptions), defaults and the controls that feed them all follow SETTING_NAMES and the table."""

from __future__ import annotations

import inspect

import gradio.utils
import pytest

from klein import presets
from klein.config import MODELS
from klein.ui.endpoints import ENDPOINTS, make_endpoint
from klein.ui.state import INPAINT_SETTING_NAMES, SETTING_NAMES

BASE = MODELS["flux2-klein-base-4b"]


def recording_handler(calls: list):
    def handle(values, progress, request):
        calls.append(values)
        return "file.png", 1, "info"

    return handle


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.api_name)
def test_signature_and_docs_come_from_the_settings_and_the_table(endpoint):
    fn = make_endpoint(endpoint, BASE, recording_handler([]))
    names = list(inspect.signature(fn).parameters)
    assert names[:1] == [endpoint.reference or "prompt"]
    assert names == list(endpoint.parameters) + ["progress", "request"]
    settings = SETTING_NAMES if endpoint.api_name != "inpaint" else INPAINT_SETTING_NAMES
    assert [n for n in names if n in SETTING_NAMES or n == "strength"] == list(settings)
    assert fn.__name__ == endpoint.tool_name
    summary, docs, _ = gradio.utils.get_function_description(fn)
    assert summary == endpoint.summary
    for name in ("resolution", "width", "steps", "guidance", "safety_tolerance", "strength"):
        if name in names:
            assert docs[name] == presets.PARAMETERS[name].doc, name
    assert all(docs[name] for name in endpoint.parameters)


def test_defaults_follow_the_table_and_the_loaded_model():
    calls: list = []
    text_to_image = make_endpoint(ENDPOINTS[0], BASE, recording_handler(calls))
    assert text_to_image("a fox") == ("file.png", 1, "info")
    values = calls[-1]
    assert values["safety_tolerance"] == presets.DEFAULT_SAFETY_TOLERANCE
    assert values["output_format"] == presets.DEFAULT_OUTPUT_FORMAT
    assert values["aspect_ratio"] == presets.PARAMETERS["aspect_ratio"].default
    assert (values["steps"], values["guidance"]) == (50, 4.0)  # the base model's, not the distilled 4 / 1.0
    # A caller who gives no seed gets a random one, and one who gives a seed gets it (issue 12, finding 3);
    # width and height are unset unless given (a size given is a size used, finding 5).
    assert (values["seed"], values["randomize_seed"]) == (None, False)
    assert (values["custom_size"], values["width"], values["height"]) == (None, None, None)
    edit = make_endpoint(ENDPOINTS[1], MODELS["tiny"], recording_handler(calls))
    edit("photo.png", "make it winter", seed=7, randomize_seed=False)
    assert calls[-1]["image"] == "photo.png" and calls[-1]["aspect_ratio"] == presets.MATCH_INPUT
    assert (calls[-1]["seed"], calls[-1]["randomize_seed"], calls[-1]["steps"]) == (7, False, 4)


def test_the_api_lists_what_the_page_sends(engine):
    """Gradio's API info (what gradio_client and MCP see) names each endpoint's parameters in the order
    of the controls that feed them, so the page and the API cannot drift apart."""
    from klein.ui.app import build_demo

    demo = build_demo(engine)
    info = demo.get_api_info()["named_endpoints"]
    for endpoint in ENDPOINTS:
        parameters = info["/" + endpoint.api_name]["parameters"]
        reference = [endpoint.reference] if endpoint.reference else []
        assert [p["parameter_name"] for p in parameters] == list(endpoint.parameters)
        by_name = {p["parameter_name"]: p for p in parameters}
        assert by_name["safety_tolerance"]["parameter_default"] == presets.DEFAULT_SAFETY_TOLERANCE
        # The defaults clients fill in are the signature's, not the page's controls (Randomize on, seed 0).
        assert [by_name[name]["parameter_default"] for name in ("seed", "randomize_seed", "loras", "enhance_prompt")
                ] == [None, False, None, False]
        if endpoint.api_name != "inpaint":
            assert [by_name[name]["parameter_default"] for name in ("custom_size", "width")] == [None, None]
        required = reference + ["prompt"] + (["mask"] if endpoint.api_name == "inpaint" else [])
        assert [by_name[name]["parameter_has_default"] for name in required] == [False] * len(required)
    fn = next(f for f in demo.fns.values() if f.api_name == "edit")
    assert [c.label for c in fn.inputs][:2] == ["Image to edit", "Prompt"]
    fn = next(f for f in demo.fns.values() if f.api_name == "inpaint")
    assert [c.label for c in fn.inputs][2:4] == ["Prompt", "Strength (1 repaints the masked area anew; lower keeps "
                                                 "more of it)"]
