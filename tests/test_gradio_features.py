"""LoRA, inpainting and prompt enhancement through gradio_client against `python app.py --model tiny`
(its LoRA folder holds one real adapter for the tiny transformer: conftest.APP_LORA)."""

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from klein.output.encode import read_metadata, settings_from_image
from tests.conftest import APP_LORA

SMALL = dict(width=128, height=96, output_format="png")


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_a_lora_from_the_folder_changes_the_pixels_and_is_recorded(client):
    args = dict(prompt="a fox", seed=5, api_name="/text_to_image", **SMALL)
    base, _, base_info, _ = client.predict(**args)
    styled, _, info, _ = client.predict(loras=[{"path": "ink", "scale": 1.0}], **args)
    off, _, off_info, _ = client.predict(loras=[{"path": APP_LORA, "scale": 0}], **args)
    assert np.abs(pixels(styled) - pixels(base)).max() > 0  # the adapter applied
    assert np.array_equal(pixels(off), pixels(base))  # scale 0: the base model exactly
    assert "loras" not in base_info and "loras" not in off_info
    # {"name", "scale"}: gradio_client would take a {"path": ...} in an output for a file to download
    assert info["loras"] == [{"name": "ink.safetensors", "scale": 1.0}]
    recorded = [{"path": "ink.safetensors", "scale": 1.0}]
    assert read_metadata(styled)["loras"] == recorded
    assert settings_from_image(styled)["loras"] == recorded  # what "Load settings from image" reads


@pytest.mark.parametrize("loras, message", [
    ([{"path": "no-such-lora", "scale": 1}], r"loras\[0\]\.path: "),
    ([{"path": APP_LORA, "scale": 9}], r"loras\[0\]\.scale: 9 is out of range -1\.\.4"),
    ({"path": APP_LORA}, "loras: must be a list"),
])
def test_a_bad_lora_names_the_field(client, loras, message):
    with pytest.raises(AppError, match=message):
        client.predict(prompt="a fox", loras=loras, api_name="/text_to_image", **SMALL)


def test_enhance_prompt_returns_the_rewrite_it_generated_from(client):
    args = dict(prompt="a fox", seed=8, api_name="/text_to_image", **SMALL)
    path, _, info, _ = client.predict(enhance_prompt=True, **args)
    again = client.predict(enhance_prompt=True, **args)[2]
    plain = client.predict(**args)[2]
    assert isinstance(info["enhanced_prompt"], str) and info["enhanced_prompt"]  # gibberish on the tiny model
    assert again["enhanced_prompt"] == info["enhanced_prompt"]  # the seed reproduces it
    assert "enhanced_prompt" not in plain and "enhance_prompt" in info["timings_ms"]
    meta = read_metadata(path)
    assert (meta["prompt"], meta["enhanced_prompt"]) == ("a fox", info["enhanced_prompt"])


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 256x192 image with detail everywhere, and a mask repainting a box in its middle."""
    folder = tmp_path_factory.mktemp("inpaint")
    rng = np.random.default_rng(0)
    image = folder / "picture.png"
    Image.fromarray(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8)).save(image)
    mask = np.zeros((192, 256), dtype=np.uint8)
    mask[64:128, 96:160] = 255
    mask_path = folder / "mask.png"
    Image.fromarray(mask).save(mask_path)
    wrong = folder / "wrong.png"
    Image.fromarray(mask[:128, :128]).save(wrong)
    return str(image), str(mask_path), str(wrong), mask > 0


def test_inpaint_changes_only_the_masked_area(client, picture):
    image, mask, _, inside = picture
    path, _, info, _ = client.predict(image=handle_file(image), mask=handle_file(mask), prompt="a red door",
                                   seed=3, output_format="png", api_name="/inpaint")
    result, original = pixels(path), pixels(image)
    assert result.shape == original.shape and (info["width"], info["height"]) == (256, 192)
    changed = np.abs(result - original).max(axis=2) > 0
    grown = np.zeros_like(inside)
    grown[64 - 8:128 + 8, 96 - 8:160 + 8] = True  # the box and its feather
    assert not changed[~grown].any()  # outside: the input's pixels exactly
    assert changed[inside].mean() > 0.5  # inside: repainted
    assert (info["workflow"], info["strength"]) == ("inpaint", 1.0)
    assert read_metadata(path)["workflow"] == "inpaint"


def test_inpaint_strength_and_references_change_the_result(client, picture):
    image, mask, _, _ = picture
    args = dict(image=handle_file(image), mask=handle_file(mask), prompt="a red door", seed=3, output_format="png",
                api_name="/inpaint")
    full = pixels(client.predict(**args)[0])
    half, _, info, _ = client.predict(strength=0.5, **args)
    assert info["strength"] == 0.5 and not np.array_equal(pixels(half), full)
    path, _, info, _ = client.predict(references=[{"image": handle_file(image), "caption": None}], **args)
    assert info["workflow"] == "inpaint" and read_metadata(path)["references"] == 1


@pytest.mark.parametrize("which, message", [
    ("wrong", "mask: is 128x128; it must be the image's size, 256x192"),
    ("none", "mask: is missing"),
    ("black", "mask: is all black"),
])
def test_a_bad_mask_names_the_field(client, picture, tmp_path, which, message):
    image, _, wrong, _ = picture
    black = tmp_path / "black.png"
    Image.new("L", (256, 192), 0).save(black)
    mask = {"wrong": handle_file(wrong), "none": None, "black": handle_file(str(black))}[which]
    with pytest.raises(AppError, match=message):
        client.predict(image=handle_file(image), mask=mask, prompt="x", api_name="/inpaint")


def test_too_many_references_for_inpaint_names_the_field(client, picture):
    image, mask, _, _ = picture
    references = [{"image": handle_file(image), "caption": None}] * 4
    with pytest.raises(AppError, match="references: 4 reference images given, at most 3"):
        client.predict(image=handle_file(image), mask=handle_file(mask), prompt="x", references=references,
                       api_name="/inpaint")
