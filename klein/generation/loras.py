"""Finding LoRA adapters: the LoRA folder (--lora-dir), the Hugging Face hub, and each file's format.

A request names its LoRAs (klein.request.LoraSpec); `LoraLibrary.resolve` turns each into a local
.safetensors file whose header has been read, before the GPU lane: a missing, unreadable or unsupported
file is a 422 naming `loras[i].path` before anyone waits, and a hub download happens here, once per
process, not while others wait for the GPU. adapters.py loads what this finds, inside the lane.

Local names are relative to the LoRA folder, so a client can name nothing outside it; only .safetensors
files are read (a pickled .bin/.ckpt can run code when loaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import InvalidRequest
from ..request import LoraSpec
from .hub import SUFFIX, choose_file, download_lora

log = logging.getLogger(__name__)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)*")
HUB_URL = re.compile(r"https://huggingface\.co/(?P<repo>[\w.-]+/[\w.-]+)/(?:resolve|blob)/(?P<revision>[^/?#]+)/"
                     r"(?P<file>[^?#]+\.safetensors)(?:[?#].*)?")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
# Key markers of adapter types diffusers cannot apply to FLUX.2 as a LoRA (or applies wrongly: it drops
# DoRA's magnitudes with a warning). LoKr loads in diffusers 0.42 only by fusing the transformer's q/k/v
# projections in place for every user, so it is refused too.
UNSUPPORTED = (("lokr_", "LoKr"), ("hada_", "LoHa"), ("oft_", "OFT"), ("boft_", "BOFT"), ("glora_", "GLoRA"),
               ("vera_", "VeRA"), ("dora_scale", "DoRA"), ("lora_magnitude_vector", "DoRA"))
LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up", "lora_linear_layer")


@dataclass(frozen=True)
class ActiveLora:
    """A found LoRA as a job carries it to the GPU lane: plain data (ZeroGPU pickles the job)."""

    name: str  # the adapter's name on the transformer: one per file and version, so a changed file reloads
    file: str  # the local .safetensors file
    scale: float
    label: str  # how to name it again: its path in the LoRA folder, or the hub id (the image metadata's)
    field: str  # "loras[i]", for errors found while loading

    def record(self) -> dict:
        """The image metadata's and the REST answer's entry: the LoraSpec shape, resolvable again."""
        return {"path": self.label, "scale": self.scale}


@dataclass(frozen=True)
class LoraInfo:
    """An adapter in the LoRA folder: `name` is what a request's path may say (the UI's choices)."""

    name: str
    path: Path
    size_bytes: int


class LoraLibrary:
    """The LoRA folder and the hub, as requests name them. `hub_cache`: None for Hugging Face's cache;
    `allow_hub` False refuses hub ids and URLs (--no-hub-loras)."""

    def __init__(self, folder: Path, hub_cache: Path | None = None, allow_hub: bool = True):
        self.folder = Path(folder)
        self.hub_cache = hub_cache
        self.allow_hub = allow_hub
        self._hub_files: dict[tuple[str, str | None, str], str] = {}  # downloads, once per process
        self._lock = threading.Lock()

    def create_folder(self) -> None:
        """Create the LoRA folder (empty) at start-up, so there is a place to put adapters; a folder that
        cannot be created only means none are offered."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("LoRA folder %s cannot be created (%s); only hub LoRAs can be used", self.folder, exc)

    def available(self) -> list[LoraInfo]:
        """The .safetensors files under the LoRA folder, sorted by name (none when it does not exist)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.rglob(f"*{SUFFIX}")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(self.folder).parts):
                name = path.relative_to(self.folder).as_posix()
                found.append(LoraInfo(name, path, path.stat().st_size))
        return found

    def resolve(self, specs: tuple[LoraSpec, ...], transformer=None) -> tuple[ActiveLora, ...]:
        """The request's LoRAs that apply (scale 0 is off: not even looked up), found and checked; with the
        `transformer` they are for, also that it can take them."""
        if transformer is not None and any(spec.scale != 0 for spec in specs):
            check_unfused(transformer)
        found: dict[str, ActiveLora] = {}
        for index, spec in enumerate(specs):
            if spec.scale == 0:
                continue
            lora = self.find(spec, f"loras[{index}]")
            if lora.name in found:
                raise InvalidRequest(f"{lora.field}.path", f"{spec.path!r} is the same file as "
                                     f"{found[lora.name].field}; give it once, with the scale you want")
            found[lora.name] = lora
        return tuple(found.values())

    def find(self, spec: LoraSpec, field: str) -> ActiveLora:
        """One LoRA as a local file whose header names LoRA weights; InvalidRequest naming `field.path`."""
        file, label = self._locate(spec, f"{field}.path")
        keys = read_header_keys(file, f"{field}.path", label)
        check_lora_keys(keys, f"{field}.path", label)
        stat = file.stat()
        identity = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        name = "lora_" + hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return ActiveLora(name=name, file=str(file), scale=spec.scale, label=label, field=field)

    def _locate(self, spec: LoraSpec, field: str) -> tuple[Path, str]:
        path = spec.path
        url = HUB_URL.fullmatch(path)
        if url:
            return self._from_hub(url["repo"], spec.weight_name or url["file"], url["revision"], field)
        if "://" in path:
            raise InvalidRequest(field, f"{_shown(path)}: only huggingface.co file URLs are fetched "
                                 "(https://huggingface.co/OWNER/NAME/resolve/main/FILE.safetensors); or give a hub id")
        try:
            local = self._local(path, spec.weight_name, field)
        except OSError:  # a name the file system refuses (too long, ...) names nothing in the folder
            local = None
        if local is not None:
            return local
        if HUB_ID.fullmatch(path) and not path.endswith("/"):
            parts = path.split("/")
            repo, rest = "/".join(parts[:2]), "/".join(parts[2:])
            weight_name = spec.weight_name or (_with_suffix(rest) if rest else None)
            return self._from_hub(repo, weight_name, "main", field)
        raise InvalidRequest(field, f"{_shown(path)} is not in the LoRA folder and is not a hub id (owner/name)"
                             + self._choices())

    def _local(self, path: str, weight_name: str | None, field: str) -> tuple[Path, str] | None:
        relative = self._relative(path, field)
        if relative is None:
            return None
        for candidate in (self.folder / relative, self.folder / _with_suffix(relative)):
            if candidate.is_file():
                if candidate.suffix != SUFFIX:
                    raise InvalidRequest(field, f"{_shown(path)} is not a {SUFFIX} file; only safetensors are "
                                         "loaded (a pickled .bin, .pt or .ckpt can run code)")
                return candidate, candidate.relative_to(self.folder).as_posix()
        folder = self.folder / relative
        if not folder.is_dir():
            return None
        file = folder / choose_file(sorted(p.name for p in folder.glob(f"*{SUFFIX}")), weight_name, _shown(path), field)
        return file, file.relative_to(self.folder).as_posix()

    def _relative(self, path: str, field: str) -> str | None:
        """`path` relative to the LoRA folder; an absolute path must lie inside it, and `..` is refused."""
        pure = PurePosixPath(path.replace("\\", "/"))
        if pure.is_absolute():
            try:
                pure = PurePosixPath(os.path.normpath(path)).relative_to(os.path.normpath(self.folder.resolve()))
            except ValueError:
                raise InvalidRequest(field, f"{_shown(path)} is outside the LoRA folder; put the file there and "
                                     "name it by its path in the folder") from None
        if ".." in pure.parts:
            raise InvalidRequest(field, f"{_shown(path)} leaves the LoRA folder ('..'); name a file inside it")
        text = pure.as_posix()
        return None if text in ("", ".") else text

    def _from_hub(self, repo: str, weight_name: str | None, revision: str, field: str) -> tuple[Path, str]:
        if not self.allow_hub:
            raise InvalidRequest(field, f"{_shown(repo)} is a hub LoRA and this server loads only its LoRA folder's "
                                 "(--no-hub-loras)" + self._choices())
        key = (repo, weight_name, revision)
        with self._lock:
            known = self._hub_files.get(key)
        if known is None:
            known = download_lora(repo, weight_name, revision, self.hub_cache, field)
            with self._lock:
                self._hub_files[key] = known
        file = Path(known)
        label = repo if weight_name is None else f"{repo}/{weight_name}"
        if revision != "main":  # only a URL names another revision
            label = f"https://huggingface.co/{repo}/resolve/{revision}/{weight_name or file.name}"
        return file, label

    def _choices(self) -> str:
        names = [info.name for info in self.available()]
        if not names:
            return "; the LoRA folder is empty"
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return f"; the LoRA folder has {shown}"


def check_unfused(transformer) -> None:
    """Refuse LoRAs on a transformer whose attention runs fused q/k/v projections (--fuse-qkv): diffusers
    would put a LoRA's q/k/v weights on the separate projections, which the fused attention never calls."""
    fused = getattr(transformer, "klein_fused_qkv", None)  # set at load: no walk over modules peft may be changing
    if fused is None:
        fused = any(getattr(module, "fused_projections", False) for module in transformer.modules())
    if fused:
        raise InvalidRequest("loras", "this server fuses the attention projections (--fuse-qkv), where a LoRA's "
                             "q/k/v weights would not apply; LoRAs need it to run without --fuse-qkv")


def read_header_keys(file: Path, field: str, label: str) -> list[str]:
    """The tensor names in a .safetensors file's header, checked against the file's size (a truncated
    or foreign file is refused here, before any tensor is read)."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            prefix = handle.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise ValueError("no safetensors header")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
        if 8 + length + end > size:
            raise ValueError("the file is shorter than its header says (truncated?)")
    except OSError as exc:
        raise InvalidRequest(field, f"{_shown(label)} cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError) else \
            "malformed header"
        raise InvalidRequest(field, f"{_shown(label)} is not a readable .safetensors file ({reason})") from None
    return list(tensors)


def check_lora_keys(keys: list[str], field: str, label: str) -> None:
    """Refuse what is not a LoRA this server can apply, naming the format."""
    for marker, kind in UNSUPPORTED:
        if any(marker in key for key in keys):
            raise InvalidRequest(field, f"{_shown(label)} is a {kind} adapter; its format is not supported here "
                                 "(LoRA only: diffusers, kohya and fal/ai-toolkit key formats)")
    if not any(marker in key for key in keys for marker in LORA_MARKERS):
        raise InvalidRequest(field, f"{_shown(label)} has no LoRA weights (no lora_A/lora_B or lora_down/lora_up "
                             "tensors); its format is not supported here")


def _with_suffix(name: str) -> str:
    return name if name.endswith(SUFFIX) else name + SUFFIX


def _shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")
