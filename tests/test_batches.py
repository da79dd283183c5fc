"""Batches in the engine: num_images images in one pipeline call, image i with seed + i, each one what its
seed makes alone; moderated one by one; cancelled as a whole; one image at a time when memory is short."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from klein.config import Settings
from klein.errors import ContentModerated, GenerationCancelled, InvalidRequest
from klein.generation.engine import Engine
from klein.generation.job import Job, estimated_gpu_seconds
from klein.output.encode import read_metadata
from klein.presets import SEED_MAX, batch_seed
from klein.request import GenerationRequest
from klein.safety.nudity import Detection
from klein.safety.policy import Moderator
from tests.conftest import make_image

SMALL = dict(width=128, height=96, steps=2, output_format="png")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_same_image(batched: Image.Image, alone: Image.Image) -> None:
    """Equal but for batched-matmul rounding: at most one level of 255, in a sliver of the values."""
    difference = np.abs(pixels(batched) - pixels(alone))
    assert difference.max() <= 1, f"max difference {difference.max()}"
    assert (difference > 0).mean() < 0.01


class PipelineCallRecorder:
    """Wraps the tiny pipeline's __call__ (it still runs): records each call's batch size, and can fail a
    batched call with out-of-memory the way a full GPU does."""

    def __init__(self, pipe, out_of_memory_above: int | None = None):
        self.pipe, self.original = pipe, type(pipe).__call__
        self.out_of_memory_above, self.batch_sizes = out_of_memory_above, []

    def __call__(self, *args, **kwargs):
        size = kwargs.get("num_images_per_prompt", 1)
        self.batch_sizes.append(size)
        if self.out_of_memory_above is not None and size > self.out_of_memory_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.original(self.pipe, *args, **kwargs)


@pytest.fixture
def recorded_pipeline(engine, monkeypatch):
    def install(out_of_memory_above: int | None = None) -> PipelineCallRecorder:
        recorder = PipelineCallRecorder(engine.model.pipe, out_of_memory_above)
        monkeypatch.setattr(type(engine.model.pipe), "__call__", lambda self, *a, **k: recorder(*a, **k))
        return recorder
    return install


@pytest.mark.parametrize("references", [0, 1, 2], ids=["text_to_image", "edit", "multi_reference"])
def test_each_image_of_a_batch_is_its_seed_alone(engine, references):
    images = tuple(make_image((96, 64), (40 * i, 90, 160)) for i in range(references))
    batch = engine.generate_batch(GenerationRequest(prompt="a lighthouse", images=images, seed=70, num_images=3,
                                                    **SMALL))
    assert batch.seeds == [70, 71, 72] and batch.moderated == []
    assert [r.image.size for r in batch.results] == [(128, 96)] * 3
    for result in batch.results:
        alone = engine.generate(GenerationRequest(prompt="a lighthouse", images=images, seed=result.seed, **SMALL))
        assert_same_image(result.image, alone.image)
    first, second = pixels(batch.results[0].image), pixels(batch.results[1].image)
    assert np.abs(first - second).mean() > 5  # the seeds differ, so the images do


def test_seeds_wrap_past_the_largest(engine):
    batch = engine.generate_batch(GenerationRequest(prompt="a kite", seed=SEED_MAX - 1, num_images=3, **SMALL))
    assert batch.seeds == [SEED_MAX - 1, SEED_MAX, 0] == [batch_seed(SEED_MAX - 1, i) for i in range(3)]
    assert_same_image(batch.results[2].image,
                      engine.generate(GenerationRequest(prompt="a kite", seed=0, **SMALL)).image)


def test_a_random_seed_is_chosen_once_for_the_batch(engine):
    batch = engine.generate_batch(GenerationRequest(prompt="a kite", num_images=2, **SMALL))
    assert batch.seeds[1] == batch_seed(batch.seeds[0], 1)


def test_an_inpainted_batch_keeps_the_unmasked_pixels_in_every_image(engine):
    image = make_image((160, 120), (30, 120, 200))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rectangle((40, 30, 100, 80), fill=255)
    request = GenerationRequest(prompt="a red door", images=(image,), mask=mask, seed=9, num_images=2,
                                steps=2, output_format="png")
    batch = engine.generate_batch(request)
    far = np.ones((120, 160), bool)
    far[20:91, 30:111] = False  # the mask and its feather
    for result in batch.results:
        assert result.image.size == (160, 120)
        assert (pixels(result.image)[far] == pixels(image)[far]).all()
    assert np.abs(pixels(batch.results[0].image) - pixels(batch.results[1].image)).max() > 0


def test_a_batch_is_one_pipeline_call_with_the_prompt_encoded_once(engine, recorded_pipeline):
    recorder = recorded_pipeline()
    encoder_runs = []
    hook = engine.model.pipe.text_encoder.register_forward_hook(lambda *_: encoder_runs.append(1))
    try:
        engine.generate_batch(GenerationRequest(prompt="a batch encoded once", seed=1, num_images=4, **SMALL))
    finally:
        hook.remove()
    assert recorder.batch_sizes == [4]
    assert len(encoder_runs) == 1


def test_out_of_memory_runs_the_batch_one_image_at_a_time(engine, recorded_pipeline):
    recorder = recorded_pipeline(out_of_memory_above=1)
    steps = []
    request = GenerationRequest(prompt="a full gpu", seed=30, num_images=3, **SMALL)
    batch = engine.generate_batch(request, progress=lambda step, total: steps.append((step, total)))
    assert recorder.batch_sizes == [3, 1, 1, 1]
    assert batch.seeds == [30, 31, 32]
    assert steps == [(1, 6), (2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]  # steps across the batch
    for result in batch.results:  # one image a call: exactly what the seed makes alone
        alone = engine.generate(GenerationRequest(prompt="a full gpu", seed=result.seed, **SMALL))
        assert (pixels(result.image) == pixels(alone.image)).all()


def test_progress_of_one_call_counts_its_steps_once_for_all_images(engine):
    steps = []
    engine.generate_batch(GenerationRequest(prompt="a fox", seed=2, num_images=2, **SMALL),
                          progress=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 2), (2, 2)]


def test_cancel_stops_the_whole_batch_and_keeps_nothing(tiny_model, tmp_path):
    engine = Engine(tiny_model, Settings(output_dir=tmp_path), "test")
    cancel = threading.Event()
    steps = []

    def on_step(step, total):
        steps.append(step)
        cancel.set()  # the user presses Cancel during the first step

    with pytest.raises(GenerationCancelled):
        engine.generate_batch(GenerationRequest(prompt="a cancelled batch", num_images=4, width=128, height=96,
                                                steps=4), on_step, cancel=cancel)
    assert steps == [1] and list(tmp_path.iterdir()) == []


class FlagOneImageStubDetector:
    """Stub detector (for the engine's flow only): reports nudity in the `flagged`-th images it is shown
    (1-based, in the order the engine checks them)."""

    def __init__(self, *flagged: int) -> None:
        self.flagged, self.calls = set(flagged), 0

    def detect(self, image):
        self.calls += 1
        return [Detection(label="FEMALE_BREAST_EXPOSED", score=0.9, box=(0, 0, 10, 10))] \
            if self.calls in self.flagged else []


def test_a_moderated_image_is_left_out_and_its_seed_reported(tiny_model, tmp_path):
    moderator = Moderator(detector=FlagOneImageStubDetector(2))
    engine = Engine(tiny_model, Settings(output_dir=tmp_path), moderator=moderator)
    batch = engine.generate_batch(GenerationRequest(prompt="a beach", seed=50, num_images=3, **SMALL))
    assert batch.seeds == [50, 52] and batch.moderated == [51]
    assert batch.info() == {"seeds": [50, 52], "moderated_seeds": [51]}
    assert sorted(p.name.split("-")[1] for p in tmp_path.iterdir()) == ["50", "52"]  # klein-<seed>-<random>.png


def test_a_batch_moderated_whole_is_content_moderated(tiny_model, tmp_path):
    engine = Engine(tiny_model, Settings(output_dir=tmp_path),
                    moderator=Moderator(detector=FlagOneImageStubDetector(1, 2)))
    with pytest.raises(ContentModerated, match="^Content moderated: the generated image was flagged as nudity"):
        engine.generate_batch(GenerationRequest(prompt="a beach", seed=50, num_images=2, **SMALL))
    assert list(tmp_path.iterdir()) == []


def test_each_file_embeds_the_seed_that_reproduces_it(engine):
    batch = engine.generate_batch(GenerationRequest(prompt="a tram", seed=500, num_images=2, **SMALL))
    assert [r.path.name.split("-")[1] for r in batch.results] == ["500", "501"]  # klein-<seed>-<random>.png
    assert [read_metadata(r.path)["seed"] for r in batch.results] == [500, 501]
    assert batch.results[0].timings_ms["total"] > 0


def test_generate_is_the_one_image_call(engine):
    with pytest.raises(ValueError, match="generate_batch"):
        engine.generate(GenerationRequest(prompt="two", num_images=2, **SMALL))


@pytest.mark.parametrize("value", [0, 5, -1, True, 2.0, "2", None])
def test_num_images_out_of_range_or_not_an_integer_names_the_field(value):
    with pytest.raises(InvalidRequest, match=f"^num_images: .*{value!r}" if not isinstance(value, int)
                       or isinstance(value, bool) else f"^num_images: {value} is out of range 1..4"):
        GenerationRequest(prompt="x", num_images=value)


def test_zero_gpu_time_grows_with_the_batch():
    one = Job(model_key=("tiny",), prompt="x", images=(), width=1024, height=1024, steps=4, guidance=1.0, seed=0)
    four = Job(**{**one.__dict__, "num_images": 4})
    assert estimated_gpu_seconds(four) - 10 == pytest.approx(4 * (estimated_gpu_seconds(one) - 10))
    assert four.seeds == [0, 1, 2, 3]
