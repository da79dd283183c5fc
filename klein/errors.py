"""The errors a user of Klein Studio can see.

Adapters map them: ui.py to gr.Error, rest.py to an HTTP status. Each message is written for the
person who sent the request, names the field at fault and never carries a traceback or a secret.
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
