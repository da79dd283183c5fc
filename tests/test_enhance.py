"""Prompt enhancement on the tiny model: the rewrite is gibberish (random weights), so these check the
mechanics: it reproduces under a seed, its length is bounded, it is what was generated from, the
original is kept, and it is moderated like any prompt."""

from __future__ import annotations

import numpy as np
import pytest

from klein.errors import RequestModerated
from klein.generation import engine as engine_module
from klein.generation.enhance import SYSTEM_MESSAGE_UPSAMPLING_I2I, SYSTEM_MESSAGE_UPSAMPLING_T2I, system_message
from klein.output.encode import read_metadata
from klein.request import GenerationRequest

SMALL = dict(width=128, height=96, steps=2)
TOKENS = 24


@pytest.fixture
def enhancing(engine):
    engine.enhance_max_tokens = TOKENS  # short rewrites keep the suite fast; the bound is what is tested
    yield engine
    engine.enhance_max_tokens = engine_module.MAX_NEW_TOKENS


def generate(engine, **request):
    return engine.generate(GenerationRequest(**{"prompt": "a lighthouse at dusk", "seed": 3, **SMALL, **request}))


def test_the_rewrite_reproduces_under_a_seed_and_is_bounded(enhancing):
    first, again, other = (generate(enhancing, enhance_prompt=True, seed=seed) for seed in (3, 3, 4))
    assert first.enhanced_prompt == again.enhanced_prompt != other.enhanced_prompt
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    tokenizer = enhancing.model.pipe.tokenizer
    assert 0 < len(tokenizer(first.enhanced_prompt)["input_ids"]) <= TOKENS + 2  # decoding may re-split a token
    assert first.enhanced_prompt != "a lighthouse at dusk"


def test_the_image_is_generated_from_the_rewrite_and_the_original_is_kept(enhancing):
    enhanced = generate(enhancing, enhance_prompt=True)
    plain_rewrite = generate(enhancing, prompt=enhanced.enhanced_prompt)
    plain_original = generate(enhancing)
    assert np.array_equal(np.asarray(enhanced.image), np.asarray(plain_rewrite.image))
    assert not np.array_equal(np.asarray(enhanced.image), np.asarray(plain_original.image))
    meta = read_metadata(enhanced.path)
    assert meta["prompt"] == "a lighthouse at dusk" and meta["enhanced_prompt"] == enhanced.enhanced_prompt
    assert meta["enhance_prompt"] is True and "enhanced_prompt" not in read_metadata(plain_original.path)
    assert enhanced.info()["enhanced_prompt"] == enhanced.enhanced_prompt
    assert list(enhanced.timings_ms)[0] == "enhance_prompt" and enhanced.timings_ms["enhance_prompt"] > 0
    assert "enhanced_prompt" not in plain_original.info() and "enhance_prompt" not in plain_original.timings_ms


def test_the_rewrite_is_moderated_like_any_prompt(engine, monkeypatch):
    # A stub for the language model, so the rewrite is one the policy refuses (the tiny model's never is).
    monkeypatch.setattr(engine_module, "enhance_prompt", lambda *args: "explicit porn scene")
    with pytest.raises(RequestModerated, match="^Request moderated: the prompt matched category sexual"):
        generate(engine, enhance_prompt=True)


def test_edits_use_the_editing_system_message(engine, monkeypatch):
    from conftest import make_image

    calls = []
    monkeypatch.setattr(engine_module, "enhance_prompt", lambda key, prompt, seed, editing, tokens, stop: calls.append(
        (prompt, seed, editing)) or prompt + ", detailed")
    generate(engine, enhance_prompt=True)
    generate(engine, enhance_prompt=True, images=(make_image(),), seed=9)
    assert calls == [("a lighthouse at dusk", 3, False), ("a lighthouse at dusk", 9, True)]
    assert system_message(False) is SYSTEM_MESSAGE_UPSAMPLING_T2I
    assert system_message(True) is SYSTEM_MESSAGE_UPSAMPLING_I2I


def test_enhance_prompt_must_be_a_bool():
    from klein.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="^enhance_prompt: must be true or false"):
        GenerationRequest(prompt="x", enhance_prompt="yes")


def test_cancel_stops_the_rewrite_between_tokens(tiny_model):
    from klein.errors import GenerationCancelled
    from klein.generation.enhance import enhance_prompt

    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 3:
            raise GenerationCancelled("Generation cancelled.")

    with pytest.raises(GenerationCancelled):
        enhance_prompt(tiny_model.key, "a lighthouse", 1, False, 200, stop)
    assert len(calls) == 3  # three tokens, not two hundred


def test_a_failing_rewrite_is_a_generation_error_without_internals(engine, monkeypatch):
    from klein.errors import GenerationError

    def broken(*args):
        raise RuntimeError("CUDA error: device-side assert at /secret/path")

    monkeypatch.setattr(engine_module, "enhance_prompt", broken)
    with pytest.raises(GenerationError, match=r"^Prompt enhancement failed \(RuntimeError\); the server log") as info:
        generate(engine, enhance_prompt=True)
    assert "/secret/path" not in str(info.value)
