"""Per-session state the UI keeps outside Gradio (pure)."""

from __future__ import annotations

import threading


class Cancellations:
    """One cancel flag per browser session, so Cancel stops that visitor's running generation."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        with self._lock:
            event = self._events[session] = threading.Event()
            return event

    def cancel(self, session: str) -> None:
        with self._lock:
            if session in self._events:
                self._events[session].set()

    def finish(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]
