"""The tiny model keeps the real models' structure (the published configs in bench/memory.py), at a few
thousand parameters: what differs is width and depth, never the kind of block or the code path."""

from __future__ import annotations

import inspect

import pytest

from bench.memory import QWEN3, QWEN3_SHARED, TRANSFORMER_SHARED


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return tiny_model.pipe


def test_the_vae_has_the_real_block_structure(pipe):
    """The published vae/config.json is AutoencoderKLFlux2's defaults; the tiny one differs in width only."""
    from diffusers import AutoencoderKLFlux2

    published = {name: p.default for name, p in inspect.signature(AutoencoderKLFlux2.__init__).parameters.items()}
    tiny = pipe.vae.config
    for key in ("down_block_types", "up_block_types", "layers_per_block", "mid_block_add_attention", "use_quant_conv",
                "use_post_quant_conv", "patch_size", "sample_size", "act_fn"):
        assert as_tuple(tiny[key]) == as_tuple(published[key]), key
    assert len(tiny["block_out_channels"]) == len(published["block_out_channels"])  # scale factor 8


def as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def test_the_transformer_has_the_real_layout(pipe):
    tiny = pipe.transformer.config
    for key in ("patch_size", "mlp_ratio", "guidance_embeds"):
        assert tiny[key] == TRANSFORMER_SHARED[key], key
    assert len(tiny["axes_dims_rope"]) == len(TRANSFORMER_SHARED["axes_dims_rope"]) == 4
    assert sum(tiny["axes_dims_rope"]) == tiny["attention_head_dim"]
    assert tiny["in_channels"] == 4 * pipe.vae.config["latent_channels"]  # 2x2 patches of latents, as 128 = 4 x 32
    assert tiny["joint_attention_dim"] == 3 * pipe.text_encoder.config.hidden_size  # layers 9, 18, 27 stacked
    assert tiny["num_layers"] >= 1 and tiny["num_single_layers"] >= 1  # both kinds of block run


def test_the_text_encoder_is_qwen3_read_at_the_real_layers(pipe):
    config = pipe.text_encoder.config
    assert type(pipe.text_encoder).__name__ == "Qwen3ForCausalLM"
    assert config.num_hidden_layers > 27  # the pipeline reads hidden states 9, 18 and 27
    assert config.tie_word_embeddings == QWEN3["4b"]["tie_word_embeddings"]  # as Qwen3-4B: offload must cope
    assert config.num_attention_heads > config.num_key_value_heads  # grouped-query attention, as the real
    assert QWEN3_SHARED["num_attention_heads"] > QWEN3_SHARED["num_key_value_heads"]


def test_the_tokenizer_speaks_qwen_chat(pipe):
    tokenizer = pipe.tokenizer
    text = tokenizer.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                        add_generation_prompt=True, enable_thinking=False)
    assert text.startswith("<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>")
    assert tokenizer.pad_token is not None and len(tokenizer) == pipe.text_encoder.config.vocab_size
    assert tokenizer.decode(tokenizer("a lighthouse at dusk")["input_ids"]) == "a lighthouse at dusk"
