import pytest
from PIL import Image

from klein.errors import InvalidRequest
from klein.request import GenerationRequest, Workflow

RED = Image.new("RGB", (320, 240), "red")


def refused(field: str, fragment: str, **kwargs):
    kwargs.setdefault("prompt", "a lighthouse at dusk")
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(**kwargs)
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(f"{field}: ") and fragment in message, message
    return message


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt(prompt):
    refused("prompt", "is empty", prompt=prompt)


def test_prompt_must_be_text():
    refused("prompt", "must be text", prompt=None)


def test_unknown_preset_names_the_value_and_lists_choices():
    message = refused("aspect_ratio", "'cinema_21_9' is not a preset", aspect_ratio="cinema_21_9")
    assert "square_1_1" in message and "landscape" in message


def test_match_input_needs_a_reference():
    refused("aspect_ratio", "needs a reference image", aspect_ratio="match_input")


def test_bad_resolution():
    refused("resolution", "'4k' is not one of 1k, 2k", resolution="4k")


@pytest.mark.parametrize("seed, fragment", [(-1, "-1 is out of range 0..4294967295"),
                                            (2**32, "4294967296 is out of range"),
                                            ("7", "must be an integer"), (True, "must be an integer")])
def test_seed_out_of_range(seed, fragment):
    refused("seed", fragment, seed=seed)


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_seed_bounds_are_accepted(seed):
    assert GenerationRequest(prompt="x", seed=seed).seed == seed


@pytest.mark.parametrize("field, value, fragment", [
    ("width", 1000, "1000 is not a multiple of 16"),
    ("width", 32, "32 is out of range 64..2048"),
    ("height", 4096, "4096 is out of range 64..2048"),
    ("height", 512.5, "must be an integer"),
])
def test_custom_size_checks(field, value, fragment):
    other = "height" if field == "width" else "width"
    refused(field, fragment, **{field: value, other: 512})


def test_custom_size_needs_both_sides():
    refused("height", "needs both width and height", width=512)


def test_steps_and_guidance_ranges():
    refused("steps", "0 is out of range 1..100", steps=0)
    refused("guidance", "25 is out of range 0..20", guidance=25.0)
    refused("guidance", "must be a number", guidance=float("nan"))


def test_output_format():
    refused("output_format", "'gif' is not one of png, jpeg, webp", output_format="gif")
    assert GenerationRequest(prompt="x", output_format="JPG").output_format == "jpeg"


def test_too_many_references():
    refused("images", "5 reference images given, at most 4 are supported", images=(RED,) * 5)


def test_references_must_be_decoded_images():
    refused("images[1]", "must be a decoded image", images=(RED, "cat.png"))


@pytest.mark.parametrize("count, workflow", [(0, Workflow.TEXT_TO_IMAGE), (1, Workflow.EDIT),
                                             (2, Workflow.MULTI_REFERENCE), (4, Workflow.MULTI_REFERENCE)])
def test_workflow_follows_image_count(count, workflow):
    assert GenerationRequest(prompt="x", images=(RED,) * count).workflow is workflow


def test_output_size_sources():
    assert GenerationRequest(prompt="x", aspect_ratio="wide").output_size() == (1568, 672)
    assert GenerationRequest(prompt="x", aspect_ratio="wide", resolution="2k").output_size() == (2048, 880)
    assert GenerationRequest(prompt="x", images=(RED,), aspect_ratio="match_input").output_size() == (1184, 880)
    assert GenerationRequest(prompt="x", width=256, height=512, aspect_ratio="wide").output_size() == (256, 512)


@pytest.mark.parametrize("value, fragment", [(6, "6 is out of range 0..5"), (-1, "-1 is out of range 0..5"),
                                             ("2", "must be an integer 0..5")])
def test_safety_tolerance_range(value, fragment):
    refused("safety_tolerance", fragment, safety_tolerance=value)


def test_safety_tolerance_default_is_2():
    assert GenerationRequest(prompt="x").safety_tolerance == 2


def test_a_huge_prompt_is_refused_by_length_before_anything_reads_it():
    refused("prompt", "is 10,000,001 characters long; the limit is 10,000", prompt="x" * 10_000_001)


def test_an_unpaired_surrogate_in_the_prompt_names_the_field():
    refused("prompt", "contains an unpaired surrogate ('\\ud800')", prompt="a fox \ud800")
