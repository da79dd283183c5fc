"""The tiny random-weight FLUX.2 [klein] pipeline: the real component classes, a few thousand
parameters, built offline.

It is saved with save_pretrained and loaded back with the same from_pretrained call the real models
use, so the real loading path is the one under test. It makes noise, not pictures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from tokenizers import pre_tokenizers
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM

# Bump when the architecture below changes, so a stale saved copy is rebuilt instead of reused.
TINY_VERSION = 3
MERGES_FILE = Path(__file__).parent / "data" / "tiny_merges.txt"
TEXT_HIDDEN = 16
TEXT_LAYERS = 28  # the pipeline reads hidden states of layers (9, 18, 27)
TEXT_OUT_LAYERS = 3
LATENT_CHANNELS = 4

# Qwen3's chat template reduced to what the pipeline uses; it must accept enable_thinking.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def build_tokenizer() -> Qwen2Tokenizer:
    """Qwen2's byte-level BPE tokenizer with 15,741 merges learned from English word frequencies
    (data/make_tiny_merges.py), so a prompt takes about as many tokens as with the real Qwen vocabulary
    (about 4 characters a token), plus Qwen's special tokens and chat template."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    lines = MERGES_FILE.read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tokens = specials + alphabet + ["".join(pair) for pair in merges]
    vocab = {token: index for index, token in enumerate(tokens)}
    return Qwen2Tokenizer(vocab=vocab, merges=merges, chat_template=CHAT_TEMPLATE)


def build_tiny_pipeline(seed: int = 0, distilled: bool = True) -> Flux2KleinPipeline:
    """Build the tiny pipeline in memory with weights drawn from `seed`; `distilled=False` is the base
    variant, which runs classifier-free guidance (two transformer calls a step) as the base models do."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN,
            intermediate_size=32,
            num_hidden_layers=TEXT_LAYERS,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
        )
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 8, 8, 8),  # four blocks: scale factor 8, sizes in multiples of 16
        layers_per_block=2,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        mid_block_add_attention=True,  # as the real VAE: the decode path at 2k includes its attention
        sample_size=1024,  # as the real VAE: tiling (when on) splits only images over 1024 px
    )
    transformer = Flux2Transformer2DModel(
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_OUT_LAYERS * TEXT_HIDDEN,
        axes_dims_rope=(4, 4, 4, 4),  # sums to attention_head_dim
        timestep_guidance_channels=32,
        guidance_embeds=False,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    return Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=distilled,
    )


def tiny_model_dir(cache_dir: Path, distilled: bool = True) -> Path:
    return Path(cache_dir) / f"tiny{'' if distilled else '-base'}-v{TINY_VERSION}"


def ensure_tiny_saved(cache_dir: Path, distilled: bool = True) -> Path:
    """Return the folder of the saved tiny pipeline, building and saving it first if needed.

    The folder is written under a temporary name and renamed into place, so a crash or a second
    process never leaves a half-written model behind.
    """
    target = tiny_model_dir(cache_dir, distilled)
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        build_tiny_pipeline(distilled=distilled).save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():  # lost a race to an incomplete copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
