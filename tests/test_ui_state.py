"""The UI's pure conversions: restoring settings into controls, custom sizes, the MCP gallery schema."""

from __future__ import annotations

import pytest

from klein.errors import InvalidRequest
from klein.ui.mcp import mcp_gallery_schema
from klein.ui.state import custom_side, settings_to_restore


def restore(settings, max_steps=16, max_tolerance=5, with_match_input=False):
    return settings_to_restore(settings, with_match_input, max_steps=max_steps, max_tolerance=max_tolerance)


def test_klein_settings_are_restored_as_recorded():
    recorded = {"prompt": "a fox", "seed": 42, "aspect_ratio": "landscape", "resolution": "2k", "steps": 4,
                "guidance": 1.0, "safety_tolerance": 3, "output_format": "png", "custom_size": False}
    assert restore(recorded) == {"prompt": "a fox", "randomize_seed": False, "seed": 42, "aspect_ratio": "landscape",
                                 "resolution": "2k", "steps": 4, "guidance": 1.0, "safety_tolerance": 3,
                                 "output_format": "png", "enhance_prompt": False}


def test_an_a1111_image_is_made_to_fit_the_controls():
    # A1111: 20 steps, CFG 7.5, 600x900 (not multiples of 16); this app runs a distilled model (max 16 steps).
    values = restore({"prompt": "a castle", "seed": 7, "steps": 20, "guidance": 7.5, "width": 600, "height": 900})
    assert values["custom_size"] is True and (values["width"], values["height"]) == (608, 896)
    assert "steps" not in values  # out of this model's range: the model's default stays
    assert values["guidance"] == 7.5 and values["seed"] == 7


@pytest.mark.parametrize(("recorded", "restored"), [((4000, 30), (2048, 64)), ((65, 2047), (64, 2048))])
def test_sizes_are_aligned_and_clamped(recorded, restored):
    values = restore({"prompt": "x", "width": recorded[0], "height": recorded[1]})
    assert (values["width"], values["height"]) == restored


def test_values_no_control_takes_are_skipped_or_capped():
    values = restore({"prompt": "x", "seed": -1, "steps": 50, "guidance": 99, "safety_tolerance": 5,
                      "aspect_ratio": "match_input", "resolution": "8k", "output_format": "gif"},
                     max_steps=16, max_tolerance=2)
    assert values == {"prompt": "x", "randomize_seed": False, "safety_tolerance": 2, "enhance_prompt": False}


def test_an_inpaint_and_an_enhanced_prompt_are_restored():
    values = restore({"prompt": "a door", "workflow": "inpaint", "strength": 0.6, "enhance_prompt": True,
                      "enhanced_prompt": "a red wooden door, ..."})
    assert (values["prompt"], values["strength"], values["enhance_prompt"]) == ("a door", 0.6, True)
    assert "strength" not in restore({"prompt": "x", "strength": 1.5})  # out of range: the slider's default stays


def test_recorded_loras_fill_the_picker_rows_this_server_can_offer():
    from klein.ui.loras import lora_rows

    recorded = [{"path": "ink.safetensors", "scale": 0.8}, {"path": "owner/style", "scale": 9},
                {"path": "gone/old.safetensors", "scale": 1}, {"path": "styles/wood", "scale": -0.5}]
    rows, missing = lora_rows(recorded, ["ink.safetensors", "styles/wood.safetensors"])
    assert rows == [("ink.safetensors", "", 0.8), ("", "owner/style", 4.0), ("styles/wood.safetensors", "", -0.5)]
    assert missing == ["gone/old.safetensors"]  # neither in the folder nor a hub id
    assert lora_rows(None, [])[0] == [("", "", 1.0)] * 3  # nothing recorded: the rows are emptied
    # an A1111 <lora:ink:0.5> tag names the file without its extension
    assert lora_rows([{"path": "ink", "scale": 0.5}], ["ink.safetensors"])[0][0] == ("ink.safetensors", "", 0.5)


def test_match_input_only_where_the_tab_has_references():
    assert restore({"prompt": "x", "aspect_ratio": "match_input"}, with_match_input=True)["aspect_ratio"] == "match_input"


def test_custom_side_names_a_missing_field():
    with pytest.raises(InvalidRequest, match="width: is missing"):
        custom_side("width", None)
    assert custom_side("height", 512.0) == 512 and isinstance(custom_side("height", 512.0), int)
    assert custom_side("height", 512.5) == 512.5  # left for the request to refuse, naming the field


def test_mcp_gallery_schema_flattens_the_gallery_and_places_its_files():
    gallery = {"$defs": {"GalleryImage": {}, "FileData": {}}, "items": {"anyOf": [{"$ref": "#/$defs/GalleryImage"}]},
               "type": "array", "description": "2 to 4 images"}
    schema = {"type": "object", "properties": {"images": gallery, "prompt": {"type": "string"}}}
    positions = [["images", "$defs", "GalleryImage", "image"], ["other"]]
    fixed, fixed_positions = mcp_gallery_schema(schema, positions)
    images = fixed["properties"]["images"]
    assert "$defs" not in images and images["description"] == "2 to 4 images"
    assert images["items"]["properties"]["image"]["type"] == "string"
    assert fixed["properties"]["prompt"] == {"type": "string"}
    assert ["other"] in fixed_positions and ["images", 0, "image"] in fixed_positions
    assert not any("$defs" in p for p in fixed_positions)


def test_cancel_flags_are_per_session_and_cleared_when_done():
    from klein.ui.state import Cancellations

    flags = Cancellations()
    mine, theirs = flags.start("me"), flags.start("you")
    flags.cancel("me")
    assert mine.is_set() and not theirs.is_set()
    flags.finish("me", mine)
    flags.cancel("me")  # nothing running for this session: a no-op, and the next run starts clear
    assert not flags.start("me").is_set()


def test_control_values_become_a_request():
    from klein.config import Limits
    from klein.ui.state import request_from_controls

    request = request_from_controls((), "a fox", "landscape", "1k", 42.0, False, "png", True, 512.0, 256.0, 4.0, 3.5,
                                    2.0, distilled=True, limits=Limits())
    assert (request.seed, request.width, request.height, request.steps) == (42, 512, 256, 4)
    assert request.guidance is None and request.safety_tolerance == 2  # distilled models ignore guidance
    preset = request_from_controls((), "a fox", "landscape", "1k", 0, True, "png", False, 512, 256, None, 3.5, 2,
                                   distilled=False, limits=Limits())
    assert preset.seed is None and preset.output_size() == (1344, 768) and preset.guidance == 3.5
    with pytest.raises(InvalidRequest, match="seed: 1.5 is not a whole number"):
        request_from_controls((), "a fox", "landscape", "1k", 1.5, False, "png", False, 0, 0, None, None, 2,
                              distilled=True, limits=Limits())


def test_a_seed_given_is_the_seed_used_unless_randomize_is_asked_for():
    from klein.ui.state import seed_from

    assert seed_from(42, False) == 42 and seed_from(42.0, False) == 42
    assert seed_from(None, False) is None  # no seed: random
    assert seed_from(42, True) is None  # randomize asked for: random, even with a seed


def test_a_size_given_without_custom_size_is_used_and_custom_size_false_ignores_it():
    from klein.config import Limits
    from klein.ui.state import request_from_controls

    def size(custom_size, width, height):
        return request_from_controls((), "a fox", "landscape", "1k", None, False, "png", custom_size, width, height,
                                     None, None, 2, distilled=True, limits=Limits()).output_size()

    assert size(None, 512, 256) == (512, 256)  # the API without custom_size: width given = width used
    assert size(None, None, None) == (1344, 768)  # nothing given: the preset
    assert size(False, 512, 256) == (1344, 768)  # the page's switch off: the preset
    assert size(True, 512.0, 256.0) == (512, 256)
    with pytest.raises(InvalidRequest, match="height: is missing"):
        size(None, 512, None)


def test_aspect_ratio_choices_are_friendly_labels_over_the_api_keys():
    from klein import presets
    from klein.ui.display import aspect_choices

    choices = aspect_choices("1k", with_match_input=False)
    assert [value for _, value in choices] == list(presets.ASPECT_PRESETS)  # the API keeps its keys
    labels = dict((value, label) for label, value in choices)
    assert labels["square_1_1"] == "Square 1:1 · 1024×1024"
    assert labels["widescreen_16_9"] == "Widescreen 16:9 · 1344×768"
    assert labels["photo_v"] == "Photo, vertical · 832×1248"
    assert len(set(labels.values())) == len(labels)  # no two entries read the same
    at_2k = dict((value, label) for label, value in aspect_choices("2k", with_match_input=True))
    width, height = presets.size_for_preset("widescreen_16_9", "2k")
    assert at_2k["widescreen_16_9"] == f"Widescreen 16:9 · {width}×{height}"
    assert at_2k[presets.MATCH_INPUT].startswith("Match the input")
