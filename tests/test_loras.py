"""LoRA adapters on the tiny model, end to end through the engine: real peft adapters saved as diffusers
and kohya files change the pixels, stack, switch without reloading, leave the base model exact, are
evicted at the cap, and never leak from one request into another's. Pixels are compared decoded."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch
from conftest_loras import (
    lora_engine,
    lora_state_dict,
    pixels,
    save_ai_toolkit,
    save_diffusers,
    save_kohya,
    save_lokr,
    save_wrong_shapes,
)
from PIL import Image

from klein.errors import InvalidRequest
from klein.generation.adapters import adapters_for
from klein.output.encode import parse_a1111_parameters, settings_from_image
from klein.request import GenerationRequest, LoraSpec


@pytest.fixture(scope="module")
def lora_dir(tiny_model, tmp_path_factory):
    """Four adapters (diffusers files a..d) and a kohya copy of `a`, built once for the module."""
    folder = tmp_path_factory.mktemp("loras")
    states = {name: lora_state_dict(tiny_model.source, seed) for seed, name in enumerate("abcd", start=1)}
    for name, state in states.items():
        save_diffusers(state, folder, f"{name}.safetensors")
    save_kohya(states["a"], folder / "a_kohya.safetensors")
    save_ai_toolkit(states["a"], folder / "a_ai_toolkit.safetensors")
    save_lokr(folder / "lokr.safetensors")
    save_wrong_shapes(folder / "wide.safetensors")
    return folder


@pytest.fixture(scope="module")
def engine_and_base(tiny_model, lora_dir, tmp_path_factory):
    engine = lora_engine(tiny_model, tmp_path_factory.mktemp("lora-engine"), lora_dir, "tiny+loras", max_loaded=3)
    assert len(adapters_for(engine.model.pipe)) == 0
    return engine, pixels(engine)  # the base model's pixels, before any adapter is loaded


@pytest.fixture(scope="module")
def engine_(engine_and_base):
    return engine_and_base[0]


@pytest.fixture(scope="module")
def base(engine_and_base):
    return engine_and_base[1]


def differ(x: np.ndarray, y: np.ndarray) -> bool:
    return x.shape == y.shape and bool(np.any(x != y))


def test_a_lora_changes_the_pixels_and_scale_zero_is_the_base(engine_, base):
    with_a = pixels(engine_, [LoraSpec("a")])
    assert differ(with_a, base)
    assert np.array_equal(pixels(engine_, [LoraSpec("a", 0.0)]), base)
    assert differ(pixels(engine_, [LoraSpec("a", 0.5)]), with_a)
    assert differ(pixels(engine_, [LoraSpec("a", -1.0)]), base)


def test_kohya_file_of_the_same_adapter_gives_the_same_pixels(engine_):
    assert np.array_equal(pixels(engine_, [LoraSpec("a_kohya.safetensors")]), pixels(engine_, [LoraSpec("a")]))


def test_ai_toolkit_file_of_the_same_adapter_gives_the_same_image(engine_, base):
    """q, k and v as one rank-12 LoRA with zeros off the diagonal: the same sums in another order, so
    a pixel may round one level apart; nowhere near the adapter's own change."""
    a = pixels(engine_, [LoraSpec("a")]).astype(int)
    fused = pixels(engine_, [LoraSpec("a_ai_toolkit")]).astype(int)
    assert np.abs(fused - a).max() <= 1 and np.abs(fused - base).max() > 5


def test_two_stacked_adapters_differ_from_each_alone(engine_):
    a, b = pixels(engine_, [LoraSpec("a")]), pixels(engine_, [LoraSpec("b")])
    both = pixels(engine_, [LoraSpec("a"), LoraSpec("b")])
    assert differ(both, a) and differ(both, b) and differ(a, b)
    assert np.array_equal(pixels(engine_, [LoraSpec("b"), LoraSpec("a")]), both)  # a sum: order is no matter


def test_a_request_without_loras_after_lora_requests_is_exactly_the_base(engine_, base):
    stacked = pixels(engine_, [LoraSpec("a"), LoraSpec("b", 2.0)])
    assert len(adapters_for(engine_.model.pipe)) >= 2
    assert np.array_equal(pixels(engine_), base)
    assert np.array_equal(pixels(engine_, [{"path": "b", "scale": 0}]), base)
    assert np.array_equal(pixels(engine_, [LoraSpec("a"), LoraSpec("b", 2.0)]), stacked)  # and back on again


def test_switching_between_cached_adapters_reloads_neither_them_nor_the_model(engine_):
    pipe = engine_.model.pipe
    state = adapters_for(pipe)
    first = {"a": pixels(engine_, [LoraSpec("a")]), "b": pixels(engine_, [LoraSpec("b")])}
    loads, transformer = state.loads, pipe.transformer
    weight = transformer.transformer_blocks[0].attn.to_q.base_layer.weight  # wrapped by peft once a LoRA loaded
    for name in "abab":
        assert np.array_equal(pixels(engine_, [LoraSpec(name)]), first[name])
    assert state.loads == loads
    assert engine_.model.pipe is pipe and pipe.transformer is transformer
    assert transformer.transformer_blocks[0].attn.to_q.base_layer.weight is weight  # nothing fused or reloaded


def test_least_recently_used_adapter_is_evicted_at_the_cap(engine_):
    state, pipe = adapters_for(engine_.model.pipe), engine_.model.pipe
    c_pixels = pixels(engine_, [LoraSpec("c")])
    pixels(engine_, [LoraSpec("a")]), pixels(engine_, [LoraSpec("b")])  # c is now the least recently used
    evictions, loads = state.evictions, state.loads
    per_adapter = state.size_bytes // len(state)
    pixels(engine_, [LoraSpec("d")])
    assert len(state) == 3 and state.evictions == evictions + 1
    assert state.size_bytes == 3 * per_adapter > 0
    assert len(pipe.transformer.peft_config) == 3  # deleted from the transformer, not only forgotten
    assert np.array_equal(pixels(engine_, [LoraSpec("c")]), c_pixels)  # loaded again, same pixels
    assert state.loads == loads + 2


def test_a_cap_below_one_requests_loras_holds_them_for_the_request_then_trims(engine_):
    state = adapters_for(engine_.model.pipe)
    both = pixels(engine_, [LoraSpec("a"), LoraSpec("b")])
    state.max_loaded = 1
    try:
        assert np.array_equal(pixels(engine_, [LoraSpec("b"), LoraSpec("a")]), both)
        assert len(state) == 2
        pixels(engine_)
        assert len(state) == 1 and len(engine_.model.pipe.transformer.peft_config) == 1
    finally:
        state.max_loaded = 3


def test_an_adapter_counts_its_bytes(engine_):
    state = adapters_for(engine_.model.pipe)
    pixels(engine_, [LoraSpec("a")])
    name = engine_.loras.find(LoraSpec("a"), "loras[0]").name
    # rank 4 on four 32x32 projections: (4x32 + 32x4) float32 each
    assert state._sizes[name] == 4 * (4 * 32 + 32 * 4) * 4


def test_users_with_different_loras_never_see_each_others(engine_, base):
    asks = {"none": [], "a": [LoraSpec("a")], "ab": [LoraSpec("a"), LoraSpec("b")], "b": [LoraSpec("b", 1.5)]}
    expected = {kind: pixels(engine_, loras) for kind, loras in asks.items()}
    assert np.array_equal(expected["none"], base)
    got: dict[str, list[np.ndarray]] = {k: [] for k in asks}

    def user(kind: str) -> None:
        for _ in range(3):
            got[kind].append(pixels(engine_, asks[kind]))

    threads = [threading.Thread(target=user, args=(kind,)) for kind in asks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for kind, images in got.items():
        assert len(images) == 3 and all(np.array_equal(image, expected[kind]) for image in images), kind


def test_inpainting_applies_the_requests_loras_and_only_them(engine_):
    """The inpaint pipeline shares the loaded transformer, so the lane's adapters are its adapters too."""
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))

    def inpaint(loras) -> np.ndarray:
        request = GenerationRequest(prompt="a blue square", images=(image,), mask=mask, seed=2, loras=loras)
        return np.asarray(engine_.generate(request, keep_file=False).image)

    plain = inpaint([])
    with_a = inpaint([LoraSpec("a")])
    assert differ(with_a, plain)
    assert np.array_equal(inpaint([]), plain)


def test_unknown_adapter_is_a_422_naming_the_path(engine_):
    with pytest.raises(InvalidRequest) as caught:
        pixels(engine_, [LoraSpec("a"), LoraSpec("nowhere")])
    assert caught.value.field == "loras[1].path" and caught.value.http_status == 422
    assert "'nowhere' is not in the LoRA folder" in str(caught.value) and "a.safetensors" in str(caught.value)


def test_lokr_is_refused_as_unsupported_before_loading(engine_):
    loads = adapters_for(engine_.model.pipe).loads
    with pytest.raises(InvalidRequest, match=r"loras\[0\]\.path: 'lokr.safetensors' is a LoKr adapter; its format "
                                             "is not supported"):
        pixels(engine_, [LoraSpec("lokr")])
    assert adapters_for(engine_.model.pipe).loads == loads


def test_an_adapter_that_does_not_fit_is_a_422_and_leaves_the_model_clean(engine_, base):
    pipe = engine_.model.pipe
    wide = engine_.loras.find(LoraSpec("wide"), "loras[0]").name
    with pytest.raises(InvalidRequest, match=r"loras\[0\]\.path: 'wide.safetensors' does not fit this model"):
        pixels(engine_, [LoraSpec("wide")])
    assert wide not in pipe.transformer.peft_config
    assert not [n for n, _ in pipe.transformer.named_parameters() if f".{wide}." in n]
    assert set(pipe.transformer.peft_config) == set(adapters_for(pipe).names)  # the books match the model
    assert np.array_equal(pixels(engine_), base)
    assert differ(pixels(engine_, [LoraSpec("a")]), base)  # and adapters still work after it


def test_the_loras_go_into_the_result_and_the_image_metadata(engine_):
    request = GenerationRequest(prompt="a red fox", width=64, height=64, seed=3, output_format="png",
                                loras=[LoraSpec("a", 0.75), LoraSpec("b.safetensors", -0.5), LoraSpec("c", 0)])
    result = engine_.generate(request)
    applied = [{"path": "a.safetensors", "scale": 0.75}, {"path": "b.safetensors", "scale": -0.5}]
    assert result.loras == applied and result.info()["loras"] == applied
    assert settings_from_image(result.path)["loras"] == applied
    parameters = Image.open(result.path).info["parameters"]
    assert parameters.splitlines()[0] == "a red fox <lora:a:0.75> <lora:b:-0.5>"
    parsed = parse_a1111_parameters(parameters)
    assert parsed["prompt"] == "a red fox" and parsed["loras"] == [{"path": "a", "scale": 0.75},
                                                                     {"path": "b", "scale": -0.5}]
    # what the metadata names finds the same adapters again
    again = GenerationRequest(prompt="a red fox", width=64, height=64, seed=3, loras=parsed["loras"])
    assert np.array_equal(np.asarray(engine_.generate(again, keep_file=False).image), np.asarray(result.image))


def test_no_loras_no_lora_metadata(engine_):
    result = engine_.generate(GenerationRequest(prompt="a fox", width=64, height=64, seed=1, output_format="png"))
    assert "loras" not in result.info() and "loras" not in settings_from_image(result.path)
    assert "<lora:" not in Image.open(result.path).info["parameters"]


def test_a_job_with_loras_is_plain_picklable_data(engine_):
    job = engine_._job_for(GenerationRequest(prompt="a fox", width=64, height=64, seed=1,
                                             loras=[LoraSpec("a", 0.5), LoraSpec("b")]))
    copy = pickle.loads(pickle.dumps(job))
    assert copy == job and [lora.scale for lora in copy.loras] == [0.5, 1.0]
    assert all(isinstance(lora.file, str) for lora in copy.loras)


def test_a_transformer_with_fused_projections_refuses_loras(tiny_model, lora_dir, tmp_path):
    """--fuse-qkv: the fused attention never calls the projections diffusers puts a LoRA's q/k/v on."""
    fused = lora_engine(tiny_model, tmp_path, lora_dir, "tiny+fused-loras")
    from klein.generation.pipeline import SpeedUps, apply_speed_ups

    apply_speed_ups(fused.model.pipe, SpeedUps(fuse_qkv=True))  # as load_model does with --fuse-qkv
    with pytest.raises(InvalidRequest, match=r"^loras: this server fuses the attention projections \(--fuse-qkv\)"):
        fused.check_request(GenerationRequest(prompt="fox", loras=[LoraSpec("a")]))
    fused.check_request(GenerationRequest(prompt="fox", loras=[LoraSpec("a", 0.0)]))  # off: nothing to refuse


def test_the_same_file_named_twice_is_refused(engine_):
    with pytest.raises(InvalidRequest, match=r"loras\[1\]\.path: 'a.safetensors' is the same file as loras\[0\]"):
        engine_.check_request(GenerationRequest(prompt="fox", loras=[LoraSpec("a"), LoraSpec("a.safetensors")]))


def test_the_text_encoder_adapters_are_part_of_the_prompt_cache_key(engine_):
    """FLUX.2's loader puts LoRAs on the transformer only; an adapter that reaches the text encoder (as
    peft can put one) must not be served another's cached embedding."""
    from peft import LoraConfig

    from klein.generation.job import encode_prompt_cached

    model = engine_.model
    plain = encode_prompt_cached(model, "a cached prompt").clone()
    encoder = model.pipe.text_encoder
    torch.manual_seed(0)
    encoder.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False), "te")
    try:
        adapted = encode_prompt_cached(model, "a cached prompt")
        assert not torch.equal(adapted, plain)
        encoder.disable_adapters()
        assert torch.equal(encode_prompt_cached(model, "a cached prompt"), plain)
    finally:
        encoder.delete_adapter("te")
