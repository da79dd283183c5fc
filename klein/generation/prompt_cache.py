"""A bounded LRU cache of prompt embeddings, so a new seed or size for the same prompt skips the
text encoder. Bounded by the bytes its tensors' storages really hold (on whatever device they live),
not entries: one real-model embedding is about 7.5 MB."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable


def prompt_key(prompt: str, text_encoder_adapters: tuple = ()) -> Hashable:
    """The cache key of a prompt's embedding: the prompt, and the adapters active on the text encoder
    (name and scale) when there are any, since they change the embedding."""
    return (prompt, text_encoder_adapters) if text_encoder_adapters else prompt


def tensor_bytes(tensor: Any) -> int:
    """What a tensor really keeps alive: its whole storage (a view keeps its base's), and a tensor
    that still has an autograd graph is refused by put()."""
    return int(tensor.untyped_storage().nbytes())


class PromptCache:
    """Thread-safe LRU keyed by prompt_key (one cache per model); evicts the least recently used past `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        if getattr(value, "grad_fn", None) is not None or getattr(value, "requires_grad", False):
            raise ValueError("prompt cache: an embedding with an autograd graph would keep the encoder's "
                             "activations alive; compute it under torch.inference_mode()")
        size = tensor_bytes(value)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self._bytes -= tensor_bytes(self._items.pop(key))
            self._items[key] = value
            self._bytes += size
            self._evict_past_cap()

    def resize(self, max_bytes: int) -> None:
        """Change the cap, evicting the least recently used entries past it."""
        with self._lock:
            self.max_bytes = max_bytes
            self._evict_past_cap()

    def _evict_past_cap(self) -> None:
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= tensor_bytes(evicted)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
