"""API keys at the door of the whole app: REST and the Gradio side (page, API, uploads, files, MCP).

With KLEIN_API_KEYS set (and KLEIN_PUBLIC_PAGE off) the page asks for a login whose password is an
API key (Gradio's own `auth`, set up by klein/ui/app.py), and Gradio then checks that login's cookie
on each of its routes. Scripts and agents that cannot log in send the key in a header, as for REST
(`Authorization: Bearer KEY`, `x-key` or `x-freepik-api-key`): KeyGate, an ASGI middleware in front
of the app, turns a valid header into a logged-in request and answers a wrong key with 401; and it
refuses every path but the login page's without a key or a login, so a route Gradio forgets to
check (its MCP server, run history) is closed all the same. The key is never stored or logged.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from ..config import ApiKeys

log = logging.getLogger(__name__)

KEY_HEADERS = (b"x-key", b"x-freepik-api-key")
# What the login page needs to draw itself and log in, and the REST API's documentation. Everything
# else needs a key or a login, checked here for every route, whether or not Gradio checks it too.
PUBLIC_PATHS = frozenset({"/", "/login", "/login/", "/logout", "/favicon.ico", "/manifest.json", "/theme.css",
                          "/robots.txt", "/docs", "/openapi.json", "/gradio_api/login_check",
                          "/gradio_api/login_check/", "/gradio_api/startup-events"})
PUBLIC_PREFIXES = ("/static/", "/assets/", "/svelte/", "/pwa_icon")
API_USER = "api-key"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key a request carries in one of the REST headers, or None."""
    for name, value in headers:
        name = name.lower()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
        if name in KEY_HEADERS:
            return value.decode("latin-1").strip()
    return None


class KeyGate:
    """ASGI middleware: a valid key header logs the request in to Gradio; a wrong one is a 401; without
    one, only public paths and requests with Gradio's login cookie pass."""

    def __init__(self, app: Any, keys: ApiKeys):
        self.app, self.keys = app, keys
        self._token = secrets.token_urlsafe(24)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gradio_app = scope.get("app")
        headers = list(scope.get("headers", []))
        key = presented_key(headers)
        if key is not None:
            if not self.keys.is_valid(key):
                return await _refuse(send, "Invalid API key.")
            scope = {**scope, "headers": self._logged_in(gradio_app, headers)}
        elif not is_public(scope["path"]) and not _has_login(gradio_app, headers):
            return await _refuse(send, "Missing API key: send 'Authorization: Bearer KEY', 'x-key: KEY' or "
                                       "'x-freepik-api-key: KEY'.")
        return await self.app(scope, receive, send)

    def _logged_in(self, gradio_app: Any, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The headers with Gradio's login cookie for this process's API-key session added."""
        if gradio_app is None or not hasattr(gradio_app, "tokens"):
            return headers
        gradio_app.tokens[self._token] = API_USER
        cookie = f"access-token-{gradio_app.cookie_id}={self._token}".encode()
        others = [(n, v) for n, v in headers if n.lower() != b"cookie"]
        existing = b"; ".join(v for n, v in headers if n.lower() == b"cookie")
        return others + [(b"cookie", existing + b"; " + cookie if existing else cookie)]


def _has_login(gradio_app: Any, headers: list[tuple[bytes, bytes]]) -> bool:
    tokens = getattr(gradio_app, "tokens", {})
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            cookie_name, _, token = part.strip().partition("=")
            if cookie_name.startswith("access-token") and token in tokens:
                return True
    return False


async def _refuse(send: Callable, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
