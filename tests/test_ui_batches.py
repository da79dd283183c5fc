"""Batches (num_images 1..4) in the page's endpoints, Gradio's API and MCP's output: every image with its
seed, each the image its seed makes alone; a click in the batch's gallery makes one the current result;
moderation leaves one out and says so; progress and Cancel cover the whole batch."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from klein.output.encode import read_metadata
from klein.safety.nudity import Detection
from klein.safety.policy import Moderator
from klein.ui.display import format_info
from klein.ui.state import Cancellations, select_from_batch, with_history_entries

SMALL = dict(width=64, height=64, steps=2, output_format="png")  # PNG: the pixels compared are the pixels made


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_a_batch_returns_every_image_each_as_its_seed_makes_it_alone(client):
    path, seed, info, images = client.predict(prompt="a fox", seed=4294967294, num_images=3, api_name="/text_to_image",
                                              **SMALL)
    seeds = [4294967294, 4294967295, 0]  # seed + i, wrapping past the largest seed
    assert (seed, info["seeds"], info["moderated_seeds"]) == (seeds[0], seeds, [])
    assert [item["caption"] for item in images] == [f"seed {s}" for s in seeds]
    assert np.array_equal(pixels(path), pixels(images[0]["image"]))  # the first output is the first image
    for item, expected in zip(images, seeds):
        assert Image.open(item["image"]).size == (64, 64)
        assert read_metadata(item["image"])["seed"] == expected  # each file reproduces alone with its seed
        alone, alone_seed, alone_info, alone_images = client.predict(prompt="a fox", seed=expected,
                                                                     api_name="/text_to_image", **SMALL)
        assert (alone_seed, alone_info["seeds"], len(alone_images)) == (expected, [expected], 1)
        assert np.abs(pixels(item["image"]) - pixels(alone)).max() <= 1  # batched matmuls round differently


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch-inputs")
    image, mask = folder / "picture.png", folder / "mask.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(image)
    box = np.zeros((96, 128), dtype=np.uint8)
    box[32:64, 32:96] = 255
    Image.fromarray(box).save(mask)
    return str(image), str(mask)


@pytest.mark.parametrize("api_name", ["/edit", "/multi_reference", "/inpaint"])
def test_every_workflow_takes_num_images(client, picture, api_name):
    image, mask = picture
    inputs = {"/edit": dict(image=handle_file(image), width=64, height=96),
              "/multi_reference": dict(images=[{"image": handle_file(image), "caption": None}] * 2, width=96,
                                       height=64),
              "/inpaint": dict(image=handle_file(image), mask=handle_file(mask))}[api_name]
    path, seed, info, images = client.predict(prompt="make it blue", seed=21, num_images=2, steps=2, api_name=api_name,
                                              **inputs)
    size = {"/edit": (64, 96), "/multi_reference": (96, 64), "/inpaint": (128, 96)}[api_name]
    assert info["seeds"] == [21, 22] and [item["caption"] for item in images] == ["seed 21", "seed 22"]
    assert [Image.open(item["image"]).size for item in images] == [size, size]
    assert not np.array_equal(pixels(images[0]["image"]), pixels(images[1]["image"]))  # two seeds, two images
    assert read_metadata(images[1]["image"])["workflow"] == api_name.strip("/")


@pytest.mark.parametrize("num_images, message", [
    (5, "num_images: 5 is out of range 1..4"),
    (0, "num_images: 0 is out of range 1..4"),
    (2.5, "num_images: must be an integer 1..4, got 2.5"),
])
def test_a_bad_num_images_names_the_field(client, num_images, message):
    with pytest.raises(AppError, match=message.replace(".", r"\.")):
        client.predict(prompt="a fox", num_images=num_images, api_name="/text_to_image", **SMALL)


def test_num_images_is_the_last_parameter_of_every_endpoint(client):
    """Appended, so a caller passing the older parameters by position is not shifted."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name, endpoint in endpoints.items():
        last = endpoint["parameters"][-1]
        assert (last["parameter_name"], last["parameter_default"]) == ("num_images", 1), name
        assert len(endpoint["returns"]) == 4, name


def batch_details(seeds, moderated=()) -> dict:
    return {"seed": seeds[0], "width": 64, "height": 64, "model": "tiny", "workflow": "text_to_image", "steps": 2,
            "guidance": 1.0, "output_format": "png", "timings_ms": {"total": 10.0}, "seeds": list(seeds),
            "moderated_seeds": list(moderated)}


def test_picking_an_image_of_a_batch_makes_it_the_current_result():
    from klein.ui.events import pick_from_batch

    images = [("/out/a.png", "seed 7"), ("/out/b.png", "seed 8"), ("/out/c.png", "seed 9")]
    event = gr.SelectData(None, {"index": 2, "value": {"image": {"path": "/out/c.png"}}, "selected": True})
    path, seed, details, info, seed_shown, _ = pick_from_batch(images, batch_details([7, 8, 9]), event)
    assert (path, seed, details["seed"], seed_shown) == ("/out/c.png", 9, 9, "9")  # Reuse seed, Edit this image
    assert details["seeds"] == [7, 8, 9] and "seed `9`" in info and "3 images: seeds 7, 8, 9" in info
    assert select_from_batch(images, batch_details([7, 8, 9]), 5) == (None, None, batch_details([7, 8, 9]))


def test_history_takes_every_image_of_a_batch_in_seed_order(engine):
    from klein.request import GenerationRequest

    batch = engine.generate_batch(GenerationRequest(prompt="a heron", seed=30, num_images=3, **SMALL))
    entries = with_history_entries([{"path": "older", "caption": "1 · old"}], [str(r.path) for r in batch.results])
    assert [e.get("seed") for e in entries] == [30, 31, 32, None]


class FlagSecondImageDetector:
    """A detector (for the flow only) that reports nudity in the second image it is shown."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return [Detection(label="FEMALE_BREAST_EXPOSED", score=0.9, box=(0, 0, 10, 10))] if self.calls == 2 else []


def endpoint(engine, name="text_to_image", cancellations=None):
    from klein.ui.app import workflow_functions

    return workflow_functions(engine, cancellations or Cancellations())[name]


def test_a_moderated_image_is_left_out_and_reported(tiny_model, tmp_path, monkeypatch):
    from klein.config import Settings
    from klein.generation.engine import Engine

    engine = Engine(tiny_model, Settings(output_dir=tmp_path), moderator=Moderator(detector=FlagSecondImageDetector()))
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    path, seed, info, images = endpoint(engine)("a meadow", seed=50, num_images=3, progress=lambda *a, **k: None,
                                                **SMALL)
    assert (seed, info["seeds"], info["moderated_seeds"]) == (50, [50, 52], [51])
    assert [caption for _, caption in images] == ["seed 50", "seed 52"]
    assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == ["50", "52"]  # nothing kept of seed 51
    assert warnings == ["Left out by moderation: seed 51."]  # the page's toast
    assert "Left out by moderation: seed 51." in format_info(info)  # and its info line


def test_progress_counts_the_batch_and_cancel_stops_all_of_it(engine):
    cancellations, steps = Cancellations(), []

    def progress(value, desc=None, unit=None):
        if isinstance(value, tuple):
            steps.append(value)
            cancellations.cancel("visitor")  # Cancel pressed during the first step

    before = set(engine.output_dir.iterdir())
    run = endpoint(engine, cancellations=cancellations)
    with pytest.raises(gr.Error, match="cancelled"):
        run("a slow batch", seed=3, num_images=4, progress=progress, request=SimpleNamespace(session_hash="visitor"),
            **{**SMALL, "steps": 4})
    assert steps == [(1, 4)]  # the batch of 4 stopped after its first step
    assert set(engine.output_dir.iterdir()) == before  # none of its images kept
    steps.clear()
    endpoint(engine)("a quick batch", seed=3, num_images=3, progress=progress,
                     request=SimpleNamespace(session_hash="other"), **SMALL)
    assert steps[-1][0] == steps[-1][1] and len(steps) == steps[-1][1]  # every step of the batch, counted once
    assert len(set(engine.output_dir.iterdir()) - before) == 3


def test_mcp_outputs_give_each_image_once_then_the_seed_and_the_fields():
    from gradio_client.utils import is_file_obj_with_meta

    from klein.ui.mcp import mcp_outputs

    def file(name):
        return {"path": name, "meta": {"_type": "gradio.FileData"}}

    gallery = [{"image": file("a.png"), "caption": "seed 1"}, {"image": file("b.png"), "caption": "seed 2"}]
    info = {"seed": 1, "seeds": [1, 2]}
    assert mcp_outputs([file("a.png"), 1, info, gallery], is_file_obj_with_meta) == [
        file("a.png"), file("b.png"), 1, '{"seed": 1, "seeds": [1, 2]}']
    assert mcp_outputs([file("a.png"), 1, info], is_file_obj_with_meta)[0] == file("a.png")  # no gallery: as before


def test_the_page_has_a_number_of_images_control_on_every_tab(engine):
    from klein.ui.app import build_demo

    demo = build_demo(engine)
    for api_name in ("text_to_image", "edit", "multi_reference", "inpaint"):
        fn = next(f for f in demo.fns.values() if f.api_name == api_name)
        control, gallery = fn.inputs[-1], fn.outputs[-1]
        assert (control.elem_id, control.minimum, control.maximum, control.value) == (f"{api_name}-num-images", 1, 4, 1)
        assert isinstance(gallery, gr.Gallery) and gallery.elem_id == f"{api_name}-images" and not gallery.visible


def test_the_moderation_note_names_one_seed_or_several():
    from klein.ui.display import moderated_note

    assert moderated_note([]) == ""
    assert moderated_note([7]) == "Left out by moderation: seed 7."
    assert moderated_note([7, 9]) == "Left out by moderation: seeds 7, 9."
