"""The three endpoints through gradio_client against `python app.py --model tiny`."""

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


def test_api_lists_the_three_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/text_to_image", "/edit", "/multi_reference"}  # helper events are hidden
    names = [p["parameter_name"] for p in endpoints["/text_to_image"]["parameters"]]
    assert names[:6] == ["prompt", "aspect_ratio", "resolution", "seed", "randomize_seed", "output_format"]
    assert [p["parameter_name"] for p in endpoints["/edit"]["parameters"]][:2] == ["image", "prompt"]
    assert [p["parameter_name"] for p in endpoints["/multi_reference"]["parameters"]][:2] == ["images", "prompt"]


def test_text_to_image_preset_size_seed_and_metadata(client):
    path, seed, info = client.predict(prompt="a lighthouse", aspect_ratio="landscape", seed=77,
                                      randomize_seed=False, api_name="/text_to_image")
    assert seed == 77 and "1344×768" in info
    assert Image.open(path).size == (1344, 768)
    meta = read_metadata(path)
    assert meta["prompt"] == "a lighthouse" and meta["seed"] == 77 and meta["workflow"] == "text_to_image"


def test_same_seed_same_bytes_through_the_api(client):
    args = dict(prompt="a fox", seed=4242, randomize_seed=False, api_name="/text_to_image", **SMALL)
    first, again = client.predict(**args)[0], client.predict(**args)[0]
    assert open(first, "rb").read() == open(again, "rb").read()


def test_random_seed_is_returned(client):
    path, seed, _ = client.predict(prompt="a fox", api_name="/text_to_image", **SMALL)
    assert 0 <= seed <= 2**32 - 1 and read_metadata(path)["seed"] == seed


def test_edit_matches_input_and_writes_jpeg(client, reference_files):
    path, seed, info = client.predict(image=handle_file(reference_files[0]), prompt="make it night",
                                      output_format="jpeg", api_name="/edit")
    assert Image.open(path).size == (1184, 880) and Image.open(path).format == "JPEG"
    assert read_metadata(path)["workflow"] == "edit"


def test_multi_reference_with_three_images_at_2k(client, reference_files):
    path, _, _ = client.predict(images=gallery(reference_files), prompt="combine them", aspect_ratio="wide",
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


def test_server_keeps_serving_after_errors(client):
    with pytest.raises(AppError):
        client.predict(prompt="", api_name="/text_to_image")
    path, _, _ = client.predict(prompt="still alive", api_name="/text_to_image", **SMALL)
    assert Image.open(path).size == (256, 192)


@pytest.mark.parametrize("kwargs, message", [
    (dict(custom_size=True, width=4096, height=512), "width: 4096 is out of range 64..2048"),
    (dict(steps=0), "steps: 0 is out of range 1.."),
])
def test_slider_range_errors_name_the_field(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(prompt="x", api_name="/text_to_image", **kwargs)
