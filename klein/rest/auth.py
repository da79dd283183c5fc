"""API keys for the REST API: which headers carry a key, constant-time checks, owner ids.

A key is never stored or logged; tasks remember only `owner_id(key)`, a SHA-256 of it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

NO_KEYS_DETAIL = (
    "The REST API is off: no API keys are configured. Set KLEIN_API_KEYS=key1,key2 "
    "or KLEIN_API_KEYS_FILE=/path/to/keys (one key a line) and restart the app."
)
MISSING_DETAIL = "Missing API key: send 'Authorization: Bearer KEY', 'x-freepik-api-key: KEY' or 'x-key: KEY'."
INVALID_DETAIL = "Invalid API key."

# auto_error=False: a missing header is ours to report, in our words and our error shape.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
freepik_scheme = APIKeyHeader(name="x-freepik-api-key", auto_error=False, description="x-freepik-api-key: KEY")
xkey_scheme = APIKeyHeader(name="x-key", auto_error=False, description="x-key: KEY")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def owner_id(key: str) -> str:
    """What a task stores about the key that created it."""
    return hashlib.sha256(b"klein-task-owner:" + key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeys:
    """The configured keys, kept as digests and compared in constant time."""

    def __init__(self, keys: Iterable[str]):
        self._digests = tuple(_digest(k) for k in keys if k)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._digests)} keys)"

    def is_valid(self, presented: str) -> bool:
        """True when `presented` is one of the keys; looks at every key whatever the answer."""
        candidate = _digest(presented)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(digest, candidate)
        return found

    def dependency(self):
        """A FastAPI dependency returning the caller's owner id, or raising 401."""

        def require_key(
            bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
            freepik: Annotated[str | None, Depends(freepik_scheme)],
            xkey: Annotated[str | None, Depends(xkey_scheme)],
        ) -> str:
            if not self:
                raise _unauthorized(NO_KEYS_DETAIL)
            presented = (bearer.credentials if bearer else None) or freepik or xkey
            if not presented:
                raise _unauthorized(MISSING_DETAIL)
            if not self.is_valid(presented.strip()):
                raise _unauthorized(INVALID_DETAIL)
            return owner_id(presented.strip())

        return require_key


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
