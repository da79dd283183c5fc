import pytest
import torch

from klein.generation.prompt_cache import PromptCache


def embedding(value: float, tokens: int = 4) -> torch.Tensor:
    return torch.full((1, tokens, 8), float(value))  # 4 tokens: 4 * 8 * 4 bytes = 128 bytes


def test_hit_miss_and_lru_eviction_by_bytes():
    cache = PromptCache(max_bytes=3 * 128)
    for i in range(3):
        cache.put(("m", f"p{i}"), embedding(i))
    assert cache.get(("m", "p0")) is not None  # p0 is now the most recently used
    cache.put(("m", "p3"), embedding(3))
    assert cache.get(("m", "p1")) is None  # least recently used, evicted
    assert cache.get(("m", "p0")) is not None and cache.get(("m", "p3")) is not None
    assert cache.size_bytes <= 3 * 128 and len(cache) == 3
    assert (cache.hits, cache.misses) == (3, 1)


def test_replacing_a_key_keeps_the_byte_count_right():
    cache = PromptCache(max_bytes=1024)
    cache.put("k", embedding(1))
    cache.put("k", embedding(2, tokens=8))
    assert cache.size_bytes == 256 and torch.equal(cache.get("k"), embedding(2, tokens=8))


def test_an_item_larger_than_the_budget_is_not_kept():
    cache = PromptCache(max_bytes=100)
    cache.put("big", embedding(1))
    assert len(cache) == 0 and cache.get("big") is None


def test_a_view_counts_the_storage_it_keeps_alive():
    base = torch.zeros(1, 64, 8)  # 2048 bytes
    cache = PromptCache(max_bytes=10_000)
    cache.put("view", base[:, :4])  # 128 bytes of elements, but the whole base stays alive
    assert cache.size_bytes == 2048


def test_an_embedding_with_an_autograd_graph_is_refused():
    weight = torch.ones(8, requires_grad=True)
    with pytest.raises(ValueError, match="inference_mode"):
        PromptCache(max_bytes=10_000).put("graph", torch.ones(1, 4, 8) * weight)


def test_engine_embeddings_hold_no_graph_and_only_their_own_bytes(engine):
    """The leak of issue 11: each cached embedding kept the text encoder's activations alive."""
    from klein.generation.job import encode_prompt_cached

    engine.prompt_cache.clear()
    embeds = encode_prompt_cached(engine.model, "a lighthouse made of glass, at dusk")
    assert embeds.grad_fn is None and not embeds.requires_grad
    assert engine.prompt_cache.size_bytes == embeds.element_size() * embeds.nelement()
