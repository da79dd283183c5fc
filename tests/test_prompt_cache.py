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
