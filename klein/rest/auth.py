"""API keys on REST routes: which headers carry a key, and the FastAPI dependency that checks it
(config.ApiKeys compares in constant time). A key is never stored or logged; tasks remember only
`owner_id(key)`, a SHA-256 of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..config import ApiKeys, owner_id

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


def key_dependency(keys: ApiKeys):
    """A FastAPI dependency returning the caller's owner id, or raising 401."""

    def require_key(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
        freepik: Annotated[str | None, Depends(freepik_scheme)],
        xkey: Annotated[str | None, Depends(xkey_scheme)],
    ) -> str:
        if not keys:
            raise _unauthorized(NO_KEYS_DETAIL)
        presented = (bearer.credentials if bearer else None) or freepik or xkey
        if not presented:
            raise _unauthorized(MISSING_DETAIL)
        if not keys.is_valid(presented.strip()):
            raise _unauthorized(INVALID_DETAIL)
        return owner_id(presented.strip())

    return require_key


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})
