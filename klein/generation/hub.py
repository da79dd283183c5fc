"""LoRA files from the Hugging Face hub: downloaded once into the hub's cache, read from it when offline,
and every failure a 422 that says what to do (loras.py calls this; nothing here runs at import)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its connection errors are not OSErrors
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import InvalidRequest

log = logging.getLogger(__name__)
SUFFIX = ".safetensors"
DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' save_lora_weights
MAX_LORA_BYTES = 2 * 1024**3  # a klein 9B LoRA at rank 128 is under 1 GiB


def download_lora(repo: str, weight_name: str | None, revision: str, cache_dir: Path | None, field: str) -> str:
    """The local path of a hub LoRA's .safetensors file, downloading it the first time.

    Without `weight_name` the repository's one .safetensors file is taken (or diffusers' default name
    when it has several). Raises InvalidRequest naming `field` when it cannot be had.
    """
    where = f"{repo!r} on the Hugging Face hub"
    try:
        if weight_name is None:
            weight_name = choose_file(_safetensors_files(repo, revision, cache_dir), None, where, field)
        path = _cached(repo, weight_name, revision, cache_dir)
        if path is None:
            _check_size(repo, weight_name, revision, where, field)
            path = hf_hub_download(repo, weight_name, revision=revision, cache_dir=cache_dir, token=False)
    except InvalidRequest:
        raise
    except LocalEntryNotFoundError:
        raise _unreachable(repo, field) from None
    except (RepositoryNotFoundError, GatedRepoError, HFValidationError):
        raise InvalidRequest(field, f"{where} was not found, or is private or gated: LoRAs named by a request are "
                             "fetched without the server's token; put such a file in the LoRA folder") from None
    except RevisionNotFoundError:
        raise InvalidRequest(field, f"{where} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise InvalidRequest(field, f"{where} has no file {weight_name!r}") from None
    except HfHubHTTPError as exc:
        raise InvalidRequest(field, f"{where} could not be downloaded (HTTP {_status(exc)})") from None
    except (OSError, httpx2.HTTPError) as exc:  # the network or the disk
        raise _unreachable(repo, field, exc) from None
    log.info("LoRA %s/%s is at %s", repo, weight_name, path)
    return path


def _cached(repo: str, weight_name: str, revision: str, cache_dir: Path | None) -> str | None:
    """The file's path when an earlier download left it in the cache (no network), else None."""
    try:
        return hf_hub_download(repo, weight_name, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, EntryNotFoundError, OSError):
        return None


def _check_size(repo: str, weight_name: str, revision: str, where: str, field: str) -> None:
    """Refuse, before downloading, a file over MAX_LORA_BYTES: a request must not be able to fill the disk."""
    [info] = HfApi().get_paths_info(repo, [weight_name], revision=revision, token=False) or [None]
    size = getattr(info, "size", None)
    if size is None:
        raise InvalidRequest(field, f"{where} has no file {weight_name!r}")
    if size > MAX_LORA_BYTES:
        raise InvalidRequest(field, f"{where}'s {weight_name!r} is {size / 2**30:.1f} GiB; LoRAs fetched for a "
                             f"request may be at most {MAX_LORA_BYTES / 2**30:.0f} GiB (put a larger one in the "
                             "LoRA folder)")


def _safetensors_files(repo: str, revision: str, cache_dir: Path | None) -> list[str]:
    """The repository's .safetensors files: from the hub, or from the cache when the hub cannot be reached."""
    try:
        files = HfApi().list_repo_files(repo, revision=revision, token=False)
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError, HFValidationError):
        raise
    except (OSError, HfHubHTTPError, httpx2.HTTPError) as exc:  # offline (a ConnectionError), or the network failed
        log.info("hub listing of %s failed (%s); looking in the cache", repo, type(exc).__name__)
        folder = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                        allow_patterns=[f"*{SUFFIX}"]))
        files = [p.relative_to(folder).as_posix() for p in folder.rglob(f"*{SUFFIX}")]
    return sorted(f for f in files if f.endswith(SUFFIX))


def choose_file(names: list[str], weight_name: str | None, where: str, field: str) -> str:
    """The file of a folder or hub repository to load: `weight_name`, the only one, or diffusers' default."""
    if weight_name is not None:
        if weight_name not in names:
            listed = f"; it has {', '.join(names[:10])}" if names else ""
            raise InvalidRequest(field, f"{where} has no {weight_name!r}{listed}")
        return weight_name
    if len(names) == 1:
        return names[0]
    if DEFAULT_WEIGHT_NAME in names:
        return DEFAULT_WEIGHT_NAME
    if not names:
        raise InvalidRequest(field, f"{where} has no {SUFFIX} file")
    raise InvalidRequest(field, f"{where} has several {SUFFIX} files ({', '.join(names[:10])}); say which with "
                         "weight_name")


def _unreachable(repo: str, field: str, exc: BaseException | None = None) -> InvalidRequest:
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return InvalidRequest(field, f"{repo!r} is not in the Hugging Face cache and the hub cannot be reached (offline, "
                          f"or HF_HUB_OFFLINE is set){reason}; download it once with network access, or put its "
                          ".safetensors file in the LoRA folder")


def _status(exc: HfHubHTTPError) -> str:
    response = getattr(exc, "response", None)
    return str(getattr(response, "status_code", "error"))
