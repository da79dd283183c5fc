"""Inpainting on the tiny model: only the masked area changes, pixel for pixel, through the real
Flux2KleinInpaintPipeline made from the loaded pipeline's components."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from klein.errors import InvalidRequest
from klein.images import load_reference
from klein.output.encode import read_metadata
from klein.request import GenerationRequest, Workflow

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SIZE = (200, 152)  # not multiples of 16: the model paints at 192x144 and the result is put back at 200x152
BOX = (60, 40, 140, 110)  # the masked rectangle
MARGIN = 12  # the feather's reach, and a little more


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return Image.open(ASSETS / "mountains.jpg").convert("RGB").resize(SIZE)


def box_mask(size=SIZE, box=BOX) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def inpaint(engine, picture, mask=None, **options):
    request = GenerationRequest(prompt="a red balloon", images=(picture, *options.pop("references", ())),
                                mask=box_mask() if mask is None else mask, seed=7, steps=4,
                                output_format="png", **options)
    result = engine.generate(request, keep_file=False, **options.pop("generate", {}))
    return result, np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB")).astype(int)


def outside(array: np.ndarray, box=BOX, margin=MARGIN) -> np.ndarray:
    keep = np.ones(array.shape[:2], dtype=bool)
    left, top, right, bottom = box
    keep[max(0, top - margin):bottom + margin + 1, max(0, left - margin):right + margin + 1] = False
    return array[keep]


def inside(array: np.ndarray, box=BOX, margin=MARGIN) -> np.ndarray:
    left, top, right, bottom = box
    return array[top + margin:bottom - margin, left + margin:right - margin]


def test_only_the_masked_area_changes(engine, picture):
    result, pixels = inpaint(engine, picture)
    original = np.asarray(picture).astype(int)
    assert result.workflow is Workflow.INPAINT and (result.width, result.height) == SIZE
    assert np.array_equal(outside(pixels), outside(original))  # decoded PNG: identical away from the feather
    assert np.abs(inside(pixels) - inside(original)).mean() > 10  # the tiny model paints noise there


def test_the_same_request_gives_the_same_pixels_and_strength_changes_them(engine, picture):
    _, full = inpaint(engine, picture)
    _, again = inpaint(engine, picture)
    _, half = inpaint(engine, picture, strength=0.5)
    assert np.array_equal(full, again)
    assert not np.array_equal(inside(full), inside(half))
    assert np.array_equal(outside(full), outside(half))


def test_references_condition_the_painted_area(engine, picture):
    robot = load_reference(ASSETS / "robot.png", "images[1]")
    mug = load_reference(ASSETS / "mug.png", "images[2]")
    _, none = inpaint(engine, picture)
    _, one = inpaint(engine, picture, references=(robot,))
    _, two = inpaint(engine, picture, references=(robot, mug))
    assert not np.array_equal(inside(none), inside(one)) and not np.array_equal(inside(one), inside(two))


def test_progress_counts_the_steps_strength_leaves(engine, picture):
    from klein.generation.inpaint import inpaint_pipeline

    for strength, steps in ((0.5, 2), (0.3, 2), (0.1, 1), (0.9, 4)):  # as diffusers' get_timesteps counts
        calls = []
        request = GenerationRequest(prompt="x", images=(picture,), mask=box_mask(), strength=strength, steps=4, seed=1)
        engine.generate(request, progress=lambda step, total: calls.append((step, total)), keep_file=False)
        assert calls == [(i, steps) for i in range(1, steps + 1)], strength
        assert inpaint_pipeline(engine.model).num_timesteps == steps  # what the pipeline itself ran
    with pytest.raises(InvalidRequest, match="^strength: 0 with 4 steps leaves no step to run"):
        engine.generate(GenerationRequest(prompt="x", images=(picture,), mask=box_mask(), strength=0.0, steps=4))


def test_metadata_says_inpaint_and_strength(engine, picture):
    result, _ = inpaint(engine, picture, strength=0.75)
    meta = read_metadata(Image.open(io.BytesIO(result.data)))
    assert meta == {**meta, "workflow": "inpaint", "strength": 0.75, "references": 0, "width": 200, "height": 152}


def test_the_inpaint_pipeline_shares_the_loaded_weights(engine, picture):
    from klein.generation.inpaint import inpaint_pipeline

    inpaint(engine, picture)
    inpainter = inpaint_pipeline(engine.model)
    for name in ("transformer", "text_encoder", "vae"):
        assert getattr(inpainter, name) is getattr(engine.model.pipe, name), name
    assert inpaint_pipeline(engine.model) is inpainter  # made once


@pytest.mark.parametrize("mask, message", [
    (box_mask(size=(100, 76)), "^mask: is 100x76; it must be the image's size, 200x152"),
    (Image.new("L", SIZE, 0), "^mask: is all black: nothing to repaint"),
])
def test_bad_masks_name_the_mask(picture, mask, message):
    with pytest.raises(InvalidRequest, match=message):
        GenerationRequest(prompt="x", images=(picture,), mask=mask)


def test_a_mask_needs_the_image_and_strength_its_range(picture):
    with pytest.raises(InvalidRequest, match="^image: inpainting needs the image"):
        GenerationRequest(prompt="x", mask=box_mask())
    with pytest.raises(InvalidRequest, match=r"^strength: 1.5 is out of range 0..1"):
        GenerationRequest(prompt="x", images=(picture,), mask=box_mask(), strength=1.5)


def test_masks_are_read_as_grayscale_and_colour_is_refused():
    colour = Image.new("RGB", (80, 80), (255, 0, 0))
    with pytest.raises(InvalidRequest, match="^mask: is a colour image"):
        load_reference(colour, "mask", mask=True)
    layer = Image.new("RGBA", (80, 80), (0, 0, 0, 0))  # an editor's brush layer: transparent where unpainted
    ImageDraw.Draw(layer).rectangle((10, 10, 30, 30), fill=(255, 255, 255, 255))
    mask = load_reference(layer, "mask", mask=True)
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 0 and mask.getpixel((20, 20)) == 255
    gray = load_reference(Image.new("RGB", (80, 80), (128, 128, 128)), "mask", mask=True)
    assert gray.mode == "L" and gray.getpixel((5, 5)) == 128


def test_an_input_over_a_megapixel_keeps_its_size_and_its_pixels(engine):
    """The model paints at 1 MP at most; the result is scaled back and put onto the full-size input."""
    from klein.generation.inpaint import generation_size

    large = load_reference(ASSETS / "mountains.jpg", "image").resize((1440, 1080))  # 1.56 MP
    box = (600, 400, 900, 700)
    request = GenerationRequest(prompt="a red balloon", images=(load_reference(large, "image", full_size=True),),
                                mask=box_mask(large.size, box), seed=7, steps=2, output_format="png")
    result = engine.generate(request, keep_file=False)
    pixels = np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB")).astype(int)
    assert pixels.shape == (1080, 1440, 3) and generation_size(large.size) == (1168, 880)
    assert np.array_equal(outside(pixels, box, 16), outside(np.asarray(large).astype(int), box, 16))
    assert load_reference(large, "image").size != large.size  # without full_size it would have been shrunk
