"""The tiny model: real component classes, saved and loaded through from_pretrained."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import Qwen3ForCausalLM

from klein.errors import ModelLoadError
from klein.generation import tiny
from klein.generation.pipeline import load_model


def test_tiny_uses_the_real_component_classes(tiny_model):
    pipe = tiny_model.pipe
    assert isinstance(pipe, Flux2KleinPipeline)
    assert isinstance(pipe.transformer, Flux2Transformer2DModel)
    assert isinstance(pipe.vae, AutoencoderKLFlux2)
    assert isinstance(pipe.text_encoder, Qwen3ForCausalLM)
    assert type(pipe.tokenizer).__name__.startswith("Qwen2Tokenizer")
    assert pipe.config.is_distilled and pipe.vae_scale_factor == 8
    assert sum(p.numel() for p in pipe.transformer.parameters()) < 100_000


def test_saved_folder_is_a_diffusers_model(tiny_model):
    folder = Path(tiny_model.source)
    assert folder.name == f"tiny-v{tiny.TINY_VERSION}"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline"
    assert {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)


def run(pipe, seed=1):
    return pipe(prompt="a red cube", height=64, width=64, num_inference_steps=2, guidance_scale=1.0,
                generator=torch.Generator().manual_seed(seed), output_type="np").images[0]


def test_round_trip_through_from_pretrained_gives_the_same_model(tiny_model):
    built = tiny.build_tiny_pipeline()
    built.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(built), run(tiny_model.pipe))


def test_loaded_once_and_cached(tiny_model, cache_dir):
    assert load_model("tiny", cache_dir) is tiny_model


def test_saved_copy_is_reused_not_rebuilt(tmp_path):
    folder = tiny.ensure_tiny_saved(tmp_path)
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert tiny.ensure_tiny_saved(tmp_path) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tiny-")]  # no staging left behind


@pytest.mark.parametrize("model, fragment", [
    ("./no/such/folder", "not a model name"),
    ("not-a-model", "not a model name"),
    ("someone/not-a-real-model", "someone/not-a-real-model"),
])
def test_unloadable_model_names_the_model_and_suggests_tiny(model, fragment, tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_model(model, tmp_path, "cpu", "fp32")
    message = str(info.value)
    assert repr(model) in message and fragment in message and "--model tiny" in message


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_model(str(tmp_path), tmp_path, "cpu", "fp32")


def test_local_folder_loads_with_defaults_from_its_config(tiny_model, tmp_path):
    model = load_model(tiny_model.source, tmp_path, "cpu", "fp32")
    assert model.spec.name == tiny_model.source and (model.spec.steps, model.spec.guidance) == (4, 1.0)
