"""The errors a user of Klein Studio can see.

Adapters map them: klein/ui to gr.Error, klein/rest to an HTTP status (with Retry-After for
QueueFull). Each message is written for the person who sent the request, names the field at
fault and never carries a traceback or a secret.
"""

from __future__ import annotations


class KleinError(Exception):
    """Base class for every error Klein Studio reports to its users."""

    http_status = 500


class InvalidRequest(KleinError):
    """A field of the request has a value the engine cannot use."""

    http_status = 422

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class ModelLoadError(KleinError):
    """The model asked for could not be loaded; start-up stops with this message."""

    http_status = 503


class GenerationError(KleinError):
    """Generation failed for a reason that is not the user's input."""

    http_status = 500


class GenerationTimeout(KleinError):
    """Generation did not finish within the configured time limit."""

    http_status = 504


class GenerationCancelled(KleinError):
    """The user (or a shutdown) cancelled the generation before it finished."""

    http_status = 499


class RequestModerated(KleinError):
    """The prompt or a reference image was refused by the safety policy (the request, before generating)."""

    http_status = 422

    def __init__(self, message: str):
        super().__init__(message if message.startswith("Request moderated") else f"Request moderated: {message}")


class ContentModerated(KleinError):
    """The generated image was refused by the safety policy; it is neither returned nor saved."""

    http_status = 422

    def __init__(self, message: str):
        super().__init__(message if message.startswith("Content moderated") else f"Content moderated: {message}")


class QueueFull(KleinError):
    """Too many requests are waiting; try again in `retry_after` seconds (None: no estimate)."""

    http_status = 503

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
