"""The engine over the tiny pipeline: three workflows, sizes, seeds, errors, progress."""

import pytest
from PIL import Image

from klein.errors import InvalidRequest
from klein.output.encode import read_metadata
from klein.request import GenerationRequest, Workflow
from tests.conftest import make_image

SMALL = dict(width=128, height=96)


def test_text_to_image_at_a_preset_size(engine):
    result = engine.generate(GenerationRequest(prompt="a lighthouse", aspect_ratio="square_1_1"))
    assert (result.width, result.height) == (1024, 1024)
    assert Image.open(result.path).size == (1024, 1024)
    assert result.workflow is Workflow.TEXT_TO_IMAGE
    assert set(result.timings_ms) >= {"text_encode", "denoise", "vae_decode", "encode", "total"}


def test_edit_matches_the_input_aspect(engine):
    result = engine.generate(GenerationRequest(prompt="make it blue", images=(make_image((400, 300)),),
                                               aspect_ratio="match_input"))
    assert (result.width, result.height) == (1184, 880) and result.workflow is Workflow.EDIT


def test_multi_reference_with_four_images_and_a_preset(engine):
    refs = tuple(make_image((200 + 40 * i, 160)) for i in range(4))
    result = engine.generate(GenerationRequest(prompt="all together", images=refs, aspect_ratio="wide"))
    assert (result.width, result.height) == (1568, 672) and result.workflow is Workflow.MULTI_REFERENCE
    assert read_metadata(result.path)["references"] == 4


@pytest.mark.parametrize("images", [(), (make_image(),), (make_image(), make_image((240, 320)))])
def test_same_seed_same_bytes_different_seed_differs(engine, images):
    request = dict(prompt="a red fox", images=images, seed=1234, **SMALL)
    first = engine.generate(GenerationRequest(**request))
    again = engine.generate(GenerationRequest(**request))
    other = engine.generate(GenerationRequest(**{**request, "seed": 1235}))
    assert first.data == again.data and first.seed == 1234
    assert first.data != other.data


def test_random_seed_is_returned_and_reproduces(engine):
    result = engine.generate(GenerationRequest(prompt="a red fox", **SMALL))
    assert 0 <= result.seed <= 2**32 - 1
    replay = engine.generate(GenerationRequest(prompt="a red fox", seed=result.seed, **SMALL))
    assert replay.data == result.data


def test_prompt_changes_the_image(engine):
    a = engine.generate(GenerationRequest(prompt="a red fox", seed=5, **SMALL))
    b = engine.generate(GenerationRequest(prompt="a blue whale", seed=5, **SMALL))
    assert a.data != b.data


def test_metadata_is_embedded(engine):
    result = engine.generate(GenerationRequest(prompt="a lighthouse", seed=9, output_format="jpeg", **SMALL))
    meta = read_metadata(result.path)
    assert meta == {**meta, "prompt": "a lighthouse", "seed": 9, "model": "tiny", "width": 128, "height": 96,
                    "steps": 4, "guidance": 1.0, "workflow": "text_to_image"}
    assert result.path.suffix == ".jpg" and result.data[:2] == b"\xff\xd8"


def test_progress_counts_denoising_steps(engine):
    calls = []
    engine.generate(GenerationRequest(prompt="x", steps=3, **SMALL), progress=lambda s, t: calls.append((s, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_prompt_longer_than_the_token_budget(engine):
    limit = engine.prompt_token_limit
    assert 400 < limit < 512
    words = lambda n: "a" + " a" * (n - 1)  # noqa: E731 - each word is one token: n words, n tokens
    engine.generate(GenerationRequest(prompt=words(limit), **SMALL))  # exactly at the limit is fine
    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest(prompt=words(limit + 1), **SMALL))
    assert str(info.value).startswith("prompt: ") and f"at most {limit} tokens" in str(info.value)


ENGLISH_PROMPT = ("portrait of an old fisherman with a weathered face, soft window light, shallow depth of field, "
                  "a cozy harbour town in the morning with fishing boats and seagulls, pastel colours. ")


def test_english_prompts_take_about_four_characters_a_token(engine):
    """The tiny tokenizer has merges like Qwen's, so a long ordinary prompt that the real model takes
    (about 1,800 characters here, ~450 tokens) is not refused by the tiny one."""
    per_token = len(ENGLISH_PROMPT) / (engine.count_prompt_tokens(ENGLISH_PROMPT) - engine.count_prompt_tokens(""))
    assert 3.5 < per_token < 5
    long_prompt = ENGLISH_PROMPT * 10
    assert len(long_prompt) > 1700
    engine.generate(GenerationRequest(prompt=long_prompt, **SMALL))


def test_cancel_stops_between_steps_and_frees_the_lane(engine):
    import threading

    from klein.errors import GenerationCancelled

    cancel = threading.Event()
    steps_seen = []

    def progress(step, total):
        steps_seen.append(step)
        cancel.set()

    with pytest.raises(GenerationCancelled):
        engine.generate(GenerationRequest(prompt="x", steps=4, **SMALL), progress, cancel=cancel)
    assert steps_seen == [1]
    assert engine.generate(GenerationRequest(prompt="x", **SMALL)).width == 128  # the lane was released


def test_deadline_in_the_past_times_out(engine):
    import time

    from klein.errors import GenerationTimeout

    with pytest.raises(GenerationTimeout, match="time limit"):
        engine.generate(GenerationRequest(prompt="x", **SMALL), deadline=time.monotonic() - 1)


def test_deadline_counts_the_wait_for_a_busy_lane(engine):
    import time

    from klein.errors import GenerationTimeout

    engine._lane.acquire()  # another user's generation holds the GPU
    try:
        started = time.monotonic()
        with pytest.raises(GenerationTimeout, match="Waited for the GPU"):
            engine.generate(GenerationRequest(prompt="x", **SMALL), deadline=started + 0.3)
        assert time.monotonic() - started < 2  # refused at the deadline, not when the lane came free
    finally:
        engine._lane.release()
    assert engine.generate(GenerationRequest(prompt="x", **SMALL)).width == 128


def test_repeated_prompt_skips_the_text_encoder_and_gives_the_same_image(engine):
    calls = []
    hook = engine.model.pipe.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        first = engine.generate(GenerationRequest(prompt="a never seen prompt", seed=3, **SMALL))
        assert len(calls) == 1
        second = engine.generate(GenerationRequest(prompt="a never seen prompt", seed=3, width=256, height=128))
        again = engine.generate(GenerationRequest(prompt="a never seen prompt", seed=3, **SMALL))
        assert len(calls) == 1  # both served from the cache
        assert again.data == first.data and second.width == 256
    finally:
        hook.remove()


def test_default_output_format_is_jpeg(engine):
    result = engine.generate(GenerationRequest(prompt="x", **SMALL))
    assert result.output_format == "jpeg" and result.data[:2] == b"\xff\xd8"


def test_zero_gpu_reservation_grows_with_the_work(engine):
    from klein.generation.job import GPU_SECONDS_CAP, Job, gpu_seconds

    def seconds(scale=1.0, size=1024, steps=4, references=0):
        refs = tuple(Image.new("RGB", (64, 64)) for _ in range(references))
        return gpu_seconds(Job(("m", "cuda", "bf16"), "x", refs, size, size, steps, 1.0, 0, model_scale=scale))

    base = seconds()
    assert 10 < base < 30
    assert seconds(size=2048) > base and seconds(steps=8) > base and seconds(references=2) > base
    assert seconds(scale=9.1 / 3.88) > base  # a 9B transformer
    assert seconds(scale=2.3, size=2048, steps=50, references=4) == GPU_SECONDS_CAP
    assert engine._job_for(GenerationRequest(prompt="x", **SMALL)).model_scale == 1.0  # tiny: never below 4B's


def test_a_temporary_output_folder_is_swept_of_old_results(tiny_model, monkeypatch):
    import os
    import time

    from klein.config import Settings
    from klein.generation.engine import Engine
    from klein.output import files
    from klein.safety.policy import Moderator

    temporary = Engine(tiny_model, Settings(model="tiny"), moderator=Moderator(image_moderation=False))
    # no --output-dir: a temp folder
    old, fresh = temporary.output_dir / "old.jpg", temporary.output_dir / "fresh.jpg"
    old.write_bytes(b"x"), fresh.write_bytes(b"x")
    two_days_ago = time.time() - 2 * files.OUTPUT_TTL
    os.utime(old, (two_days_ago, two_days_ago))
    monkeypatch.setattr(files, "SWEEP_EVERY", 0)
    result = temporary.generate(GenerationRequest(prompt="x", **SMALL))
    assert not old.exists() and fresh.exists() and result.path.exists()


def test_a_chosen_output_folder_is_never_swept(engine, monkeypatch):
    import os

    from klein.output import files

    kept = engine.output_dir / "kept.jpg"
    kept.write_bytes(b"x")
    os.utime(kept, (0, 0))
    monkeypatch.setattr(files, "SWEEP_EVERY", 0)
    engine.generate(GenerationRequest(prompt="x", **SMALL))
    assert kept.exists()
