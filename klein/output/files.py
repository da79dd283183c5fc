"""Where results are written: unique file names, a temporary folder removed at exit, and the
sweep that drops old results from it (pure: stdlib)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from .encode import EXTENSIONS

OUTPUT_TTL = 24 * 3600  # seconds a result stays in a temporary output folder
SWEEP_EVERY = 600  # seconds between sweeps


def write_image(data: bytes, output_format: str, directory: Path, stem: str = "klein") -> Path:
    """Write encoded bytes to a new file in `directory` (unique name) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}-{uuid.uuid4().hex[:12]}.{EXTENSIONS[output_format]}"
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def temporary_folder(prefix: str) -> Path:
    """A fresh folder, removed with what it holds when the process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def delete_older_than(folder: Path, seconds: float) -> None:
    """Delete the files in `folder` last modified more than `seconds` ago."""
    cutoff = time.time() - seconds
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass  # gone already, or in use: the next sweep tries again


class OutputFolder:
    """The folder results are written to: the user's (--output-dir, never cleaned) or a temporary one
    that drops results older than OUTPUT_TTL, checked at most every SWEEP_EVERY seconds, and is
    removed when the process exits."""

    def __init__(self, path: Path | None = None, prefix: str = "klein-studio-"):
        self.owned = path is None
        self.path = temporary_folder(prefix) if path is None else Path(path)
        self._swept_at = time.monotonic()

    def write(self, data: bytes, output_format: str, stem: str) -> Path:
        """Write one result and sweep old ones if it is time to."""
        path = write_image(data, output_format, self.path, stem=stem)
        self.sweep_if_due()
        return path

    def sweep_if_due(self) -> None:
        now = time.monotonic()
        if not self.owned or now - self._swept_at < SWEEP_EVERY:
            return
        self._swept_at = now
        delete_older_than(self.path, OUTPUT_TTL)
