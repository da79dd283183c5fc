"""The workflow endpoints through gradio_client against `python app.py --model tiny`."""

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from klein.output.encode import read_metadata

SMALL = dict(custom_size=True, width=256, height=192)


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refs")
    paths = []
    for i, (size, color) in enumerate([((400, 300), "red"), ((300, 300), "blue"), ((256, 512), "green")]):
        path = folder / f"ref{i}.{'png' if i % 2 == 0 else 'jpg'}"
        Image.new("RGB", size, color).save(path)
        paths.append(str(path))
    return paths


def gallery(paths):
    return [{"image": handle_file(p), "caption": None} for p in paths]


def test_api_lists_the_four_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/text_to_image", "/edit", "/multi_reference", "/inpaint"}  # helper events are hidden
    names = [p["parameter_name"] for p in endpoints["/text_to_image"]["parameters"]]
    assert names[:6] == ["prompt", "aspect_ratio", "resolution", "seed", "randomize_seed", "output_format"]
    assert [p["parameter_name"] for p in endpoints["/edit"]["parameters"]][:2] == ["image", "prompt"]
    assert [p["parameter_name"] for p in endpoints["/multi_reference"]["parameters"]][:2] == ["images", "prompt"]
    assert [p["parameter_name"] for p in endpoints["/inpaint"]["parameters"]][:4] == ["image", "mask", "prompt",
                                                                                      "strength"]


def test_text_to_image_preset_size_seed_and_metadata(client):
    path, seed, info, _ = client.predict(prompt="a lighthouse", aspect_ratio="landscape", seed=77,
                                      randomize_seed=False, api_name="/text_to_image")
    assert seed == 77 and (info["width"], info["height"]) == (1344, 768)
    assert Image.open(path).size == (1344, 768)
    meta = read_metadata(path)
    assert meta["prompt"] == "a lighthouse" and meta["seed"] == 77 and meta["workflow"] == "text_to_image"


def test_same_seed_same_bytes_through_the_api(client):
    args = dict(prompt="a fox", seed=4242, randomize_seed=False, api_name="/text_to_image", **SMALL)
    first, again = client.predict(**args)[0], client.predict(**args)[0]
    assert open(first, "rb").read() == open(again, "rb").read()


def test_random_seed_is_returned(client):
    path, seed, _, _ = client.predict(prompt="a fox", api_name="/text_to_image", **SMALL)
    assert 0 <= seed <= 2**32 - 1 and read_metadata(path)["seed"] == seed
    again = client.predict(prompt="a fox", api_name="/text_to_image", **SMALL)[1]
    assert again != seed  # no seed given: a new one each call


def test_a_seed_given_alone_is_the_seed_used(client):
    """randomize_seed is off unless asked for: a seed given is a seed used (issue 12, finding 3)."""
    path, seed, info, _ = client.predict(prompt="a fox", seed=42, api_name="/text_to_image", **SMALL)
    assert seed == 42 and info["seed"] == 42 and read_metadata(path)["seed"] == 42
    _, seed, _, _ = client.predict(prompt="a fox", seed=42, randomize_seed=True, api_name="/text_to_image", **SMALL)
    assert seed != 42  # asked for a random one: the given seed is overridden, and the one used returned


def test_info_is_plain_fields(client):
    """The third output is data for scripts, not the page's Markdown (issue 12, finding 8)."""
    path, seed, info, _ = client.predict(prompt="a fox", seed=5, steps=2, api_name="/text_to_image", **SMALL)
    assert isinstance(info, dict), info
    assert {k: info[k] for k in ("seed", "width", "height", "model", "steps", "workflow", "output_format")} == {
        "seed": 5, "width": 256, "height": 192, "model": "tiny", "steps": 2, "workflow": "text_to_image",
        "output_format": "jpeg"}
    assert info["timings_ms"]["total"] >= info["timings_ms"]["denoise"] > 0
    assert not any("*" in str(value) or "`" in str(value) for value in info.values())  # no Markdown


def test_width_and_height_given_are_the_size_used(client):
    """An API caller who gives a size gets it, without knowing about the page's Custom size switch."""
    path, _, info, _ = client.predict(prompt="a fox", width=320, height=128, api_name="/text_to_image")
    assert Image.open(path).size == (320, 128) and (info["width"], info["height"]) == (320, 128)
    path, _, _, _ = client.predict(prompt="a fox", custom_size=False, width=320, height=128, aspect_ratio="wide",
                                resolution="1k", api_name="/text_to_image")
    assert Image.open(path).size == (1568, 672)  # custom_size=False: the preset, as the page's switch says


def test_edit_matches_input_and_writes_jpeg(client, reference_files):
    path, seed, _, _ = client.predict(image=handle_file(reference_files[0]), prompt="make it night",
                                      output_format="jpeg", api_name="/edit")
    assert Image.open(path).size == (1184, 880) and Image.open(path).format == "JPEG"
    assert read_metadata(path)["workflow"] == "edit"


def test_multi_reference_with_three_images_at_2k(client, reference_files):
    path, _, _, _ = client.predict(images=gallery(reference_files), prompt="combine them", aspect_ratio="wide",
                                resolution="2k", output_format="webp", api_name="/multi_reference")
    assert Image.open(path).size == (2048, 880) and Image.open(path).format == "WEBP"
    meta = read_metadata(path)
    assert meta["workflow"] == "multi_reference" and meta["references"] == 3


@pytest.mark.parametrize("kwargs, api_name, message", [
    (dict(prompt="   "), "/text_to_image", "prompt: is empty"),
    (dict(prompt="x", aspect_ratio="cinema"), "/text_to_image", "aspect_ratio: 'cinema' is not a preset"),
    (dict(prompt="x", resolution="4k"), "/text_to_image", "resolution: '4k' is not one of 1k, 2k"),
    (dict(prompt="x", randomize_seed=False, seed=-5), "/text_to_image", "seed: -5 is out of range"),
    (dict(prompt="x", custom_size=True, width=1000, height=512), "/text_to_image", "width: 1000 is not a multiple of 16"),
    (dict(prompt="x", output_format="gif"), "/text_to_image", "output_format: 'gif' is not one of"),
    (dict(prompt="x", image=None), "/edit", "image: is missing"),
    (dict(prompt="x", seed=1.5), "/text_to_image", "seed: 1.5 is not a whole number"),
    (dict(prompt="x", seed=7.5, randomize_seed=True), "/text_to_image", "seed: 7.5 is not a whole number"),
    (dict(prompt="x", width=1000), "/text_to_image", "height: is missing; a custom size needs both"),
])
def test_errors_name_the_field(client, kwargs, api_name, message):
    with pytest.raises(AppError, match=message.replace("(", r"\(")):
        client.predict(api_name=api_name, **kwargs)


def test_edit_error_names_the_image_field(client, tmp_path):
    tiny_image = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(tiny_image)
    with pytest.raises(AppError, match="image: image is 40x40; each side must be at least 64 px"):
        client.predict(image=handle_file(str(tiny_image)), prompt="x", api_name="/edit")


def test_multi_reference_errors_count_the_images(client, reference_files):
    with pytest.raises(AppError, match="images: 1 reference image given, multi-reference needs 2 to 4"):
        client.predict(images=gallery(reference_files[:1]), prompt="x", api_name="/multi_reference")
    with pytest.raises(AppError, match="images: 5 reference images given, multi-reference needs 2 to 4"):
        client.predict(images=gallery(reference_files + reference_files[:2]), prompt="x", api_name="/multi_reference")


def test_a_gallery_of_bare_files_names_the_field_and_the_shape(client, reference_files):
    """images=[handle_file(a), handle_file(b)] without the {"image": ...} wrapper."""
    with pytest.raises(AppError, match=r'images: each item must be \{"image": handle_file\(path\), "caption": None\}'):
        client.predict(images=[handle_file(p) for p in reference_files[:2]], prompt="x", api_name="/multi_reference")


def test_a_text_file_among_the_references_names_its_index(client, reference_files, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(AppError, match=r"images\[1\]: notes.txt is not an image"):
        client.predict(images=gallery([reference_files[0], str(notes)]), prompt="x", api_name="/multi_reference")


def test_an_unreachable_url_names_the_field_and_keeps_its_query_secret(client):
    with pytest.raises(AppError, match=r"image: could not fetch http://127.0.0.1:9/photo.png \(.+\); give a public "
                                       r"http\(s\) URL or a data URI") as error:
        client.predict(image=handle_file("http://127.0.0.1:9/photo.png?sig=secret"), prompt="x", api_name="/edit")
    assert "secret" not in str(error.value)


def test_server_keeps_serving_after_errors(client):
    with pytest.raises(AppError):
        client.predict(prompt="", api_name="/text_to_image")
    path, _, _, _ = client.predict(prompt="still alive", api_name="/text_to_image", **SMALL)
    assert Image.open(path).size == (256, 192)


@pytest.mark.parametrize("kwargs, message", [
    (dict(custom_size=True, width=4096, height=512), "width: 4096 is out of range 64..2048"),
    (dict(steps=0), "steps: 0 is out of range 1.."),
])
def test_slider_range_errors_name_the_field(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(prompt="x", api_name="/text_to_image", **kwargs)
