"""Inpainting through the REST API on the tiny model: `mask` and `strength` on /v1/generate (JSON, a form,
a URL) and on the task API, the mask's 422s, and a queued inpaint task's mask across a restart."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from conftest_rest import AUTH, TASKS, Loopback, make_client, rest_settings, started_client, wait_for_status
from PIL import Image, ImageDraw

GEN = "/v1/generate"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
SIZE = (200, 152)  # not multiples of 16: the model paints at 192x144, the answer has the input's size
BOX = (60, 40, 140, 110)  # the masked rectangle
MARGIN = 12  # the feather's reach, and a little more


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PICTURE = Image.open(ASSETS / "mountains.jpg").convert("RGB").resize(SIZE)
PICTURE_PNG = png(PICTURE)


def box_mask(size=SIZE, box=BOX, mode="L", fill=255) -> bytes:
    mask = Image.new(mode, size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=fill)
    return png(mask)


MASK_PNG = box_mask()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def outside(array: np.ndarray) -> np.ndarray:
    keep = np.ones(array.shape[:2], dtype=bool)
    left, top, right, bottom = BOX
    keep[max(0, top - MARGIN):bottom + MARGIN + 1, max(0, left - MARGIN):right + MARGIN + 1] = False
    return array[keep]


def inside(array: np.ndarray) -> np.ndarray:
    left, top, right, bottom = BOX
    return array[top + MARGIN:bottom - MARGIN, left + MARGIN:right - MARGIN]


def assert_inpainted(data: bytes) -> None:
    """The answer has the input's size, its pixels away from the mask are the input's and inside they differ."""
    result, original = pixels(data), np.asarray(PICTURE).astype(int)
    assert result.shape == original.shape
    assert np.array_equal(outside(result), outside(original))
    assert np.abs(inside(result) - inside(original)).mean() > 10  # the tiny model paints noise there


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    with started_client(engine, tmp_path_factory) as client:
        yield client


def inpaint(client, **body):
    full = {"prompt": "a red balloon", "images": [b64(PICTURE_PNG)], "mask": b64(MASK_PNG), "seed": 7,
            "output_format": "png", **body}
    return client.post(GEN, json={k: v for k, v in full.items() if v is not None}, headers=AUTH)


def test_sync_inpaint_changes_only_the_masked_area(client):
    response = inpaint(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["workflow"], body["width"], body["height"]) == ("inpaint", *SIZE)
    assert_inpainted(base64.b64decode(body["image"]))


def test_a_form_with_a_mask_file_and_a_raw_answer(client):
    files = [("images", ("p.png", PICTURE_PNG, "image/png")), ("mask", ("m.png", MASK_PNG, "image/png"))]
    data = {"prompt": "a red balloon", "seed": "7", "strength": "1"}
    response = client.post(GEN, data=data, files=files, headers={**AUTH, "Accept": "image/png"})
    assert response.status_code == 200, response.text
    assert response.headers["x-klein-workflow"] == "inpaint" and response.headers["x-klein-seed"] == "7"
    assert_inpainted(response.content)
    assert np.array_equal(pixels(response.content), pixels(base64.b64decode(inpaint(client).json()["image"])))


def test_strength_changes_the_painted_area_only(client):
    full = pixels(base64.b64decode(inpaint(client).json()["image"]))
    half = pixels(base64.b64decode(inpaint(client, strength=0.5).json()["image"]))
    form = client.post(GEN, data={"prompt": "a red balloon", "seed": "7", "strength": "0.5", "output_format": "png"},
                       files=[("images", ("p.png", PICTURE_PNG, "image/png")),
                              ("mask", ("m.png", MASK_PNG, "image/png"))], headers=AUTH)
    assert not np.array_equal(inside(full), inside(half)) and np.array_equal(outside(full), outside(half))
    assert np.array_equal(pixels(base64.b64decode(form.json()["image"])), half)  # "0.5" in a form is 0.5


def test_an_all_white_mask_is_a_full_repaint(client):
    response = inpaint(client, mask=b64(png(Image.new("L", SIZE, 255))))
    assert response.status_code == 200, response.text
    assert (response.json()["workflow"], response.json()["width"]) == ("inpaint", SIZE[0])


def test_references_after_the_first_image_condition_the_painted_area(client):
    robot = b64((ASSETS / "robot.png").read_bytes())
    alone = pixels(base64.b64decode(inpaint(client).json()["image"]))
    response = inpaint(client, image_uris=None, images=[b64(PICTURE_PNG), robot])
    assert response.json()["workflow"] == "inpaint", response.text
    with_robot = pixels(base64.b64decode(response.json()["image"]))
    assert not np.array_equal(inside(alone), inside(with_robot)) and np.array_equal(outside(alone), outside(with_robot))


def test_a_mask_by_url_follows_the_remote_rules(client, engine, tmp_path):
    with Loopback(lambda r: (200, {"Content-Type": "image/png"}, MASK_PNG)) as server:
        response = inpaint(client, mask=server.url + "/mask.png?sig=secret")
        assert response.status_code == 200, response.text
        assert_inpainted(base64.b64decode(response.json()["image"]))
        _, strict = make_client(engine, rest_settings(tmp_path, allow_private_urls=False))
        refused = inpaint(strict, mask=server.url + "/mask.png?sig=secret")
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("mask: ") and "private, loopback" in refused.json()["detail"]
    assert "secret" not in refused.text


BAD = [
    ({"mask": b64(box_mask(size=(100, 76)))}, "mask: is 100x76; it must be the image's size, 200x152"),
    ({"mask": b64(box_mask(mode="RGB", fill=(255, 0, 0)))}, "mask: is a colour image"),
    ({"mask": b64(png(Image.new("L", SIZE, 0)))}, "mask: is all black: nothing to repaint"),
    ({"mask": b64(b"not a png")}, "mask: not a readable image"),
    ({"mask": "not base64!"}, "mask: not a URL, a data URI or valid base64"),
    ({"mask": ""}, "mask: is empty"),
    ({"strength": 1.5}, "strength: 1.5 is out of range 0..1"),
    ({"strength": -0.1}, "strength: -0.1 is out of range 0..1"),
    ({"strength": "high"}, "strength: Input should be a valid number"),
    ({"strength": True}, "strength: Input should be a valid number"),
    ({"strength": 0}, "strength: 0 with 4 steps leaves no step to run"),  # the tiny model's 4 steps
]


@pytest.mark.parametrize("body,start", BAD + [
    ({"images": None}, "images: inpainting needs the image to paint on as well as the mask"),
    ({"images": [], "image_uris": []}, "images: inpainting needs the image to paint on"),
])
def test_sync_bad_masks_and_strengths_are_422s_naming_the_field(client, body, start):
    response = inpaint(client, **body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(start), response.json()


def test_form_bad_values_name_the_field(client):
    files = [("images", ("p.png", PICTURE_PNG, "image/png")), ("mask", ("m.png", box_mask((96, 96)), "image/png"))]
    wrong_size = client.post(GEN, data={"prompt": "x"}, files=files, headers=AUTH)
    assert wrong_size.json()["detail"].startswith("mask: is 96x96; it must be the image's size, 200x152")
    no_image = client.post(GEN, data={"prompt": "x"}, files=files[1:], headers=AUTH)
    assert no_image.json()["detail"].startswith("images: inpainting needs the image")
    strength = client.post(GEN, data={"prompt": "x", "strength": "lots"}, files=files, headers=AUTH)
    assert strength.json()["detail"].startswith("strength: Input should be a valid number")
    two = client.post(GEN, data={"prompt": "x"}, files=files + files[1:], headers=AUTH)
    assert two.status_code == 422 and two.json()["detail"].startswith("mask: 2 masks given")


# -- tasks -----------------------------------------------------------------------------------------

def create(client, **body):
    full = {"prompt": "a red balloon", "input_image": b64(PICTURE_PNG), "mask": b64(MASK_PNG), "seed": 7,
            "output_format": "png", **body}
    return client.post(TASKS, json={k: v for k, v in full.items() if v is not None}, headers=AUTH)


def test_an_inpaint_task_completes_with_the_sync_answers_pixels(client):
    response = create(client, strength=0.75)
    assert response.status_code == 200, response.text
    done = wait_for_status(client, response.json()["data"]["task_id"])
    assert (done["status"], done["workflow"], done["width"], done["height"]) == ("COMPLETED", "inpaint", *SIZE), done
    image = client.get(done["generated"][0], headers=AUTH).content
    assert_inpainted(image)
    sync = base64.b64decode(inpaint(client, strength=0.75).json()["image"])
    assert np.array_equal(pixels(image), pixels(sync))


@pytest.mark.parametrize("body,start", BAD + [
    ({"input_image": None}, "input_image: inpainting needs the image to paint on as well as the mask"),
    ({"input_image": None, "input_image_2": b64(PICTURE_PNG)}, "input_image: inpainting needs the image"),
])
def test_task_bad_masks_are_422s_and_not_created(client, body, start):
    before = client.get(TASKS, headers=AUTH).json()["meta"]["total"]
    response = create(client, **body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(start), response.json()
    assert client.get(TASKS, headers=AUTH).json()["meta"]["total"] == before


def test_a_queued_inpaint_task_keeps_its_mask_across_a_restart(engine, tmp_path):
    settings = rest_settings(tmp_path)
    crashed, client = make_client(engine, settings)  # never started: the task waits when the process dies
    task_id = create(client).json()["data"]["task_id"]
    crashed.tasks.store.close()
    restarted, client = make_client(engine, settings)
    with client:
        done = wait_for_status(client, task_id)
        assert (done["status"], done["workflow"]) == ("COMPLETED", "inpaint"), done
        assert_inpainted(client.get(done["generated"][0], headers=AUTH).content)
    assert restarted.tasks.store.mask(task_id) is None  # dropped with the inputs once the task finished


def test_the_schema_states_the_new_fields_rules(client):
    paths = client.get("/openapi.json").json()["paths"]
    sync = paths["/v1/generate"]["post"]["requestBody"]["content"]
    task = paths[TASKS]["post"]["requestBody"]["content"]["application/json"]["schema"]
    for schema in (sync["application/json"]["schema"], sync["multipart/form-data"]["schema"], task):
        strength = schema["properties"]["strength"]
        assert (strength["type"], strength["minimum"], strength["maximum"]) == ("number", 0.0, 1.0)
        assert schema["properties"]["prompt_upsampling"]["type"] == "boolean"
        assert "mask" in schema["properties"]
    assert sync["multipart/form-data"]["schema"]["properties"]["mask"]["format"] == "binary"
    assert task["if"]["required"] == ["mask"] and task["then"]["required"] == ["input_image"]


def test_a_large_images_mask_of_another_size_names_the_sizes_as_sent(client):
    # Both are shrunk to the model's area (1 MP) when decoded; the message names the sizes the client sent.
    big = png(Image.new("RGB", (1600, 1000), (90, 120, 60)))
    response = inpaint(client, images=[b64(big)], mask=b64(box_mask(size=(800, 500))))
    assert response.json()["detail"].startswith("mask: is 800x500; it must be the image's size, 1600x1000")


def test_an_image_over_a_megapixel_comes_back_at_its_own_size_with_its_pixels(client):
    """The image painted on is not shrunk to 1 MP as references are: only the masked area changes."""
    large = PICTURE.resize((1440, 1080))
    box = (600, 400, 900, 700)
    mask = Image.new("L", large.size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    response = inpaint(client, images=[b64(png(large))], mask=b64(png(mask)))
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    result = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert result.size == (1440, 1080) and (body["width"], body["height"]) == (1440, 1080)
    keep = np.ones((1080, 1440), dtype=bool)
    keep[400 - 16:700 + 17, 600 - 16:900 + 17] = False
    assert np.array_equal(np.asarray(result.convert("RGB"))[keep], np.asarray(large)[keep])
