"""Settings of the REST API, read from the environment (pure: stdlib only).

The API keys and the webhook secret are kept out of repr() so they never reach a log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RestSettings:
    """How the REST API behaves; every field has an environment variable (docs/rest.md)."""

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    generation_timeout: float = 300.0
    allow_remote_images: bool = True
    allow_private_urls: bool = False
    fetch_timeout: float = 10.0
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 5
    webhook_backoff: float = 1.0
    webhook_timeout: float = 10.0
    tasks_db: Path = Path("tasks.db")
    results_dir: Path | None = None
    result_ttl: float = 24 * 3600.0
    task_backlog: int = 32
    sync_backlog: int = 8
    max_task_attempts: int = 3

    @property
    def results_path(self) -> Path:
        return self.results_dir or self.tasks_db.parent / "results"

    @classmethod
    def from_env(cls, cache_dir: Path, environ: Mapping[str, str] | None = None) -> RestSettings:
        """Read KLEIN_* variables; raises ValueError naming the variable when one is malformed."""
        env = os.environ if environ is None else environ
        secret = env.get("KLEIN_WEBHOOK_SECRET") or None
        return cls(
            api_keys=load_api_keys(env),
            generation_timeout=_number(env, "KLEIN_GENERATION_TIMEOUT", 300.0),
            allow_remote_images=_flag(env, "KLEIN_ALLOW_REMOTE_IMAGES", True),
            allow_private_urls=_flag(env, "KLEIN_ALLOW_PRIVATE_URLS", False),
            fetch_timeout=_number(env, "KLEIN_FETCH_TIMEOUT", 10.0),
            webhook_secret=secret,
            webhook_attempts=int(_number(env, "KLEIN_WEBHOOK_ATTEMPTS", 5)),
            webhook_backoff=_number(env, "KLEIN_WEBHOOK_BACKOFF", 1.0),
            webhook_timeout=_number(env, "KLEIN_WEBHOOK_TIMEOUT", 10.0),
            tasks_db=Path(env.get("KLEIN_TASKS_DB") or Path(cache_dir) / "tasks.db"),
            results_dir=Path(env["KLEIN_RESULTS_DIR"]) if env.get("KLEIN_RESULTS_DIR") else None,
            result_ttl=_number(env, "KLEIN_RESULT_TTL", 24 * 3600.0),
            task_backlog=int(_number(env, "KLEIN_TASK_BACKLOG", 32)),
            sync_backlog=max(1, int(_number(env, "KLEIN_SYNC_BACKLOG", 8))),
        )


def load_api_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """Keys from KLEIN_API_KEYS (comma-separated) and KLEIN_API_KEYS_FILE (one a line, # comments)."""
    keys = [k.strip() for k in env.get("KLEIN_API_KEYS", "").split(",")]
    path = env.get("KLEIN_API_KEYS_FILE")
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"KLEIN_API_KEYS_FILE: cannot read {path!r} ({type(exc).__name__})") from None
        keys += [line.strip() for line in lines if not line.strip().startswith("#")]
    return tuple(dict.fromkeys(k for k in keys if k))


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: {value!r} is not a yes/no value (use 1 or 0)")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a number") from None
    if number <= 0:
        raise ValueError(f"{name}: {value!r} must be greater than 0")
    return number
