"""Memory modes: every offload mode runs the same diffusers calls on the tiny model and gives the same
pixels as mode none; auto's choice follows the free memory; the need is read from configs on meta."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from klein.config import Settings
from klein.generation.memory import GIB, Need, activation_bytes, choose_offload, measure_need
from klein.generation.pipeline import load_model, resolve_offload
from klein.request import GenerationRequest

SMALL = dict(width=128, height=96, steps=2, seed=5)


def pixels(model, **request) -> np.ndarray:
    from klein.generation.engine import Engine

    engine = Engine(model, Settings(image_moderation=False))
    return np.asarray(engine.generate(GenerationRequest(prompt="a lighthouse", **SMALL, **request),
                                      keep_file=False).image)


@pytest.fixture(scope="module")
def reference_pixels(tiny_model):
    return pixels(tiny_model)


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_every_offload_mode_gives_the_pixels_of_mode_none(mode, cache_dir, reference_pixels):
    model = load_model("tiny", cache_dir, "cpu", "fp32", offload=mode)
    assert model.offload == mode and model.key[-1] == mode
    hooked = [name for name, component in model.pipe.components.items() if isinstance(component, torch.nn.Module)
              and any(hasattr(m, "_hf_hook") or getattr(m, "_diffusers_hook", None) for m in component.modules())]
    assert {"transformer", "text_encoder", "vae"} <= set(hooked), hooked  # the diffusers offload hooks are on
    assert model.cache_device == "cpu"
    assert np.array_equal(pixels(model), reference_pixels)
    assert np.array_equal(pixels(model), reference_pixels)  # again, with the prompt from the cache


def test_mode_none_loads_straight_onto_the_device(tiny_model):
    assert tiny_model.offload == "none" and tiny_model.pipe.hf_device_map == "cpu"
    assert tiny_model.cache_device == "cpu"


def test_auto_without_a_gpu_is_none(tiny_model):
    assert resolve_offload("auto", tiny_model.source, "cpu", tiny_model.dtype)[0] == "none"


NEED_4B = Need({"transformer": int(7.2 * GIB), "text_encoder": int(7.5 * GIB), "vae": int(0.16 * GIB)})


@pytest.mark.parametrize("free_gib, expected", [(79, "none"), (22, "none"), (15, "model"), (11, "model"),
                                                (8, "sequential")])
def test_auto_picks_the_fastest_mode_that_fits(free_gib, expected):
    mode, reason = choose_offload(int(free_gib * GIB), NEED_4B, activation_bytes(3072, 4.0, vae_tiling=True))
    assert mode == expected and "GiB" in reason


def test_activations_grow_with_size_and_tiling_bounds_the_decode():
    assert activation_bytes(3072, 4.0) > activation_bytes(3072, 1.0)
    assert activation_bytes(3072, 4.0, vae_tiling=True) < activation_bytes(3072, 4.0)


def test_need_is_read_from_the_configs_on_the_meta_device(tiny_model):
    need = measure_need(tiny_model.source, torch.float32)
    pipe = tiny_model.pipe
    for name in ("transformer", "text_encoder", "vae"):
        counted = sum(p.numel() for p in getattr(pipe, name).parameters())
        assert need.components[name] == counted * 4, name
    assert set(need.components) == {"transformer", "text_encoder", "vae"}
    assert need.largest == max(need.components.values())


def test_vae_tiling_decodes_wide_images_in_tiles(cache_dir):
    """With tiling on (by flag, or because the model offloads), an image over 1024 px a side is
    decoded in tiles, at its full size; smaller ones decode as before."""
    model = load_model("tiny", cache_dir, "cpu", "fp32", offload="model", vae_tiling=True)
    vae = model.pipe.vae
    assert vae.use_tiling
    calls = []
    original = vae.tiled_decode
    vae.tiled_decode = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    try:
        from klein.generation.engine import Engine

        engine = Engine(model, Settings(image_moderation=False))
        small = engine.generate(GenerationRequest(prompt="x", width=256, height=64, steps=1, seed=1), keep_file=False)
        assert calls == [] and small.image.size == (256, 64)
        wide = engine.generate(GenerationRequest(prompt="x", width=1088, height=64, steps=1, seed=1), keep_file=False)
        assert calls and wide.image.size == (1088, 64)
    finally:
        vae.tiled_decode = original


def test_the_banner_says_which_mode_and_why(cache_dir, tiny_model):
    from klein.generation.engine import Engine
    from klein.ui.display import model_banner

    model = load_model("tiny", cache_dir, "cpu", "fp32", offload="sequential")
    banner = model_banner(Engine(model, Settings(image_moderation=False)))
    assert "offload **sequential** (requested with --offload sequential)" in banner
    assert "offload" not in model_banner(Engine(tiny_model, Settings(image_moderation=False)))


def test_the_readme_memory_table_counts_the_published_architectures():
    """bench.memory builds the real configs on the meta device through measure_need: the 4B transformer
    is the 3.876 B parameters bench.gpu checks, Qwen3-4B 4.02 B (tied), Qwen3-8B 8.19 B (untied)."""
    from bench.memory import rows

    table = {row[0]: row for row in rows()}
    four, nine = table["flux2-klein-4b / base-4b"], table["flux2-klein-9b / base-9b"]
    assert four[1:5] == ["7.2", "7.5", "0.2", "14.9"]
    assert nine[2] == "15.3" and float(nine[4]) > 30
    assert four[-5:] == ["model", "model", "none", "none", "none"]  # 12, 16, 24, 48, 80 GB
    assert nine[-1] == "none" and nine[-5] == "sequential"
