"""The model path, proven on decoded pixels (not encoded bytes, which differ through the embedded
metadata even when the pixels are the same): each input that should change the image does, and
the same request twice gives the same pixels. Each test names the mutation it catches."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from klein.request import GenerationRequest
from tests.conftest import make_image

SMALL = dict(width=128, height=96, output_format="png")


def pixels(result) -> np.ndarray:
    """The result file decoded, as the user's viewer would see it."""
    return np.asarray(Image.open(io.BytesIO(result.data)).convert("RGB"), dtype=np.int16)


def generate(engine, **fields):
    return pixels(engine.generate(GenerationRequest(**{"prompt": "a red fox", "seed": 7, **SMALL, **fields})))


@pytest.fixture(scope="module")
def base_engine(cache_dir, tmp_path_factory):
    from klein.config import Settings
    from klein.generation.engine import Engine
    from klein.generation.pipeline import load_model

    model = load_model("tiny-base", cache_dir)
    settings = Settings(model="tiny-base", output_dir=tmp_path_factory.mktemp("base-out"))
    return Engine(model, settings, "test")


def test_the_same_request_twice_gives_the_same_pixels(engine):
    assert np.array_equal(generate(engine), generate(engine))


def test_the_seed_changes_the_pixels(engine):
    """Catches: the generator always seeded with the same number."""
    assert not np.array_equal(generate(engine, seed=7), generate(engine, seed=8))


def test_the_prompt_changes_the_pixels(engine):
    """Catches: the prompt replaced (e.g. by "") before the text encoder."""
    assert not np.array_equal(generate(engine, prompt="a red fox"), generate(engine, prompt="a blue whale"))


def test_the_reference_image_changes_an_edit(engine):
    """Catches: the reference images not passed to the pipeline."""
    red = generate(engine, images=(make_image((160, 120), (200, 40, 40)),))
    blue = generate(engine, images=(make_image((160, 120), (30, 60, 220)),))
    assert not np.array_equal(red, blue)


def test_each_reference_changes_a_multi_reference_image(engine):
    first = make_image((160, 120), (200, 40, 40))
    with_green = generate(engine, images=(first, make_image((160, 120), (30, 200, 60))))
    with_blue = generate(engine, images=(first, make_image((160, 120), (30, 60, 220))))
    assert not np.array_equal(with_green, with_blue)


def test_guidance_changes_a_base_model_image(base_engine):
    """Catches: guidance_scale hard-coded (e.g. to 1.0, which turns CFG off)."""
    assert not base_engine.model.spec.distilled
    low, high = generate(base_engine, guidance=2.0, steps=4), generate(base_engine, guidance=6.0, steps=4)
    assert not np.array_equal(low, high)
    assert np.array_equal(high, generate(base_engine, guidance=6.0, steps=4))


def test_a_distilled_model_ignores_guidance(engine):
    assert np.array_equal(generate(engine, guidance=1.0), generate(engine, guidance=7.0))


def test_cfg_runs_the_transformer_twice_a_step_and_encodes_the_empty_prompt_once(base_engine, monkeypatch):
    transformer = base_engine.model.pipe.transformer
    calls = []
    handle = transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    encoded = []
    encode = base_engine.model.pipe.encode_prompt

    def recording_encode(prompt=None, prompt_embeds=None, **kwargs):
        if prompt_embeds is None:  # the pipeline hands back embeddings it was given without encoding
            encoded.append(prompt)
        return encode(prompt=prompt, prompt_embeds=prompt_embeds, **kwargs)

    monkeypatch.setattr(base_engine.model.pipe, "encode_prompt", recording_encode)
    try:
        base_engine.prompt_cache.clear()
        first = base_engine.generate(GenerationRequest(prompt="a fox", guidance=4.0, steps=3, seed=1, **SMALL))
        base_engine.generate(GenerationRequest(prompt="an owl", guidance=4.0, steps=3, seed=1, **SMALL))
        base_engine.generate(GenerationRequest(prompt="an owl", guidance=1.0, steps=3, seed=1, **SMALL))
    finally:
        handle.remove()
    assert len(calls) == 3 * 2 + 3 * 2 + 3  # two calls a step with CFG, one without (guidance 1)
    assert encoded == ["a fox", "", "an owl"]  # the negative ("") once, then from the cache
    assert first.timings_ms["text_encode"] > 0 and first.guidance == 4.0


def test_the_step_callback_stays_out_of_the_zero_gpu_worker(engine, monkeypatch):
    """Callbacks do not pickle into ZeroGPU's worker. Catches: the callback sent there."""
    from klein.generation import engine as engine_module

    seen = []

    def fake_run_job(job, progress):
        seen.append(progress)
        return [Image.new("RGB", (job.width, job.height))], {"text_encode": 0.0, "denoise": 0.0, "vae_decode": 0.0}

    monkeypatch.setattr(engine_module, "on_zero_gpu", lambda: True)
    monkeypatch.setattr(engine_module, "run_job", fake_run_job)
    engine.generate(GenerationRequest(prompt="x", **SMALL), progress=lambda step, total: None)
    assert seen == [None]


def test_a_job_pickles_for_the_zero_gpu_worker(engine):
    import pickle

    job = engine._job_for(GenerationRequest(prompt="x", images=(make_image(),), seed=3, **SMALL))
    again = pickle.loads(pickle.dumps(job))
    assert again.seed == 3 and again.images[0].size == job.images[0].size and again.model_key == job.model_key


def test_out_of_memory_in_the_worker_is_the_documented_message(engine, monkeypatch):
    import torch

    from klein.errors import GenerationError
    from klein.generation import engine as engine_module

    def out_of_memory(job, progress):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(engine_module, "run_job", out_of_memory)
    with pytest.raises(GenerationError, match="^Out of memory generating 128x96; try a smaller size"):
        engine.generate(GenerationRequest(prompt="x", **SMALL))


def test_a_zero_gpu_job_over_the_cap_is_refused_before_it_starts(base_engine, monkeypatch):
    from klein.errors import InvalidRequest
    from klein.generation import engine as engine_module
    from klein.generation.job import GPU_SECONDS_CAP, estimated_gpu_seconds, gpu_seconds

    monkeypatch.setattr(engine_module, "on_zero_gpu", lambda: True)
    monkeypatch.setattr(engine_module, "run_job", lambda job, progress: pytest.fail("the job was started"))
    big = GenerationRequest(prompt="x", resolution="2k", steps=50, guidance=4.0)
    with pytest.raises(InvalidRequest, match="needs about .* s of ZeroGPU time .* lower the steps"):
        base_engine.generate(big)
    with pytest.raises(InvalidRequest):
        base_engine.check_request(big)  # a task is refused when it is created, not when it runs
    monkeypatch.setattr(engine_module, "on_zero_gpu", lambda: False)
    job = base_engine._job_for(big)
    assert job.cfg and estimated_gpu_seconds(job) > GPU_SECONDS_CAP == gpu_seconds(job)
    no_cfg = base_engine._job_for(GenerationRequest(prompt="x", guidance=1.0, width=512, height=512, steps=8))
    with_cfg = base_engine._job_for(GenerationRequest(prompt="x", guidance=4.0, width=512, height=512, steps=8))
    assert estimated_gpu_seconds(with_cfg) - 10 == pytest.approx(2 * (estimated_gpu_seconds(no_cfg) - 10))


def test_start_up_warms_the_model_and_a_broken_backend_fails_there(tiny_model, cache_dir, monkeypatch, caplog):
    from klein.config import Settings
    from klein.errors import ModelLoadError
    from klein.generation import engine as engine_module
    from klein.generation.engine import Engine

    calls = []
    real_run_job = engine_module.run_job
    monkeypatch.setattr(engine_module, "run_job", lambda job, progress: calls.append(job) or real_run_job(job, progress))
    engine = Engine.from_settings(Settings(model="tiny", cache_dir=cache_dir))
    assert [(job.width, job.height, job.steps) for job in calls] == [(64, 64, 1)]
    assert engine.model is tiny_model  # the cached pipeline, not a second load
    monkeypatch.setattr(engine_module, "on_zero_gpu", lambda: True)
    Engine.from_settings(Settings(model="tiny", cache_dir=cache_dir, device="cpu"))
    assert len(calls) == 1  # on ZeroGPU the GPU attaches per call: no warm-up to spend quota on
    monkeypatch.setattr(engine_module, "on_zero_gpu", lambda: False)

    def broken(job, progress):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(engine_module, "run_job", broken)
    with pytest.raises(ModelLoadError, match="cannot generate on cpu .*no kernel image.* Change --device"):
        Engine.from_settings(Settings(model="tiny", cache_dir=cache_dir))


def test_fp16_warns_that_klein_is_trained_in_bf16(cache_dir, caplog):
    import logging

    from klein.generation.pipeline import load_model

    with caplog.at_level(logging.WARNING, logger="klein.generation.pipeline"):
        load_model("tiny", cache_dir, dtype="fp16")
    assert "trained in bf16" in caplog.text
