"""Train the tiny model's BPE merges (tiny_merges.txt) once; the tiny model only reads the file.

The merges make prompt lengths behave like the real Qwen tokenizer's (about 4 characters a token on
English prompts), so the prompt-length limit refuses what the real model would refuse. Trained on
English word frequencies from wordfreq (data CC BY-SA 4.0), with Qwen2's own pre-tokenizer:

    python -m venv /tmp/wf && /tmp/wf/bin/pip install wordfreq==3.1.1 tokenizers==0.23.3
    /tmp/wf/bin/python klein/generation/data/make_tiny_merges.py
"""

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from wordfreq import top_n_list, word_frequency

# transformers' Qwen2Tokenizer splits text with this before byte-level BPE.
PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                     r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = 30000
VOCAB_SIZE = 16000
HERE = Path(__file__).parent


def corpus(scale: float = 2e6):
    """Each common word as often as English uses it (and capitalised, less often)."""
    for word in top_n_list("en", WORDS):
        count = max(1, round(word_frequency(word, "en") * scale))
        yield (" " + word) * count
        yield (" " + word.capitalize()) * max(1, count // 20)


def main() -> None:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]  # pairs, in the order they were learned
    lines = [f"#version: klein tiny merges, wordfreq en top {WORDS}, vocab {VOCAB_SIZE}"]
    lines += [" ".join(pair) for pair in merges]
    (HERE / "tiny_merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - 1} merges")


if __name__ == "__main__":
    main()
