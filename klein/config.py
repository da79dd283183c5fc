"""Settings read from flags and the environment, the limits, and the model registry (pure).

Every environment variable is read by one of three functions (env_flag, env_number, env_text) with
one rule: empty or unset means the default, and a value that cannot be read is a ValueError that
names the variable. Settings (the app), RestSettings (the REST API) and the safety cap all use them.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .presets import MAX_SAFETY_TOLERANCE

DTYPE_NAMES = ("bf16", "fp16", "fp32")
OFFLOAD_MODES = ("auto", "none", "model", "sequential")  # the memory modes: docs in README "Memory"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class ModelSpec:
    """A row of the model table in DESIGN.md."""

    name: str
    hub_id: str
    distilled: bool
    licence: str

    @property
    def steps(self) -> int:
        """The default number of denoising steps."""
        return 4 if self.distilled else 50

    @property
    def guidance(self) -> float:
        """The default guidance scale (distilled models take none: 1.0 turns it off)."""
        return 1.0 if self.distilled else 4.0


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("flux2-klein-4b", "black-forest-labs/FLUX.2-klein-4B", True, "Apache-2.0"),
        ModelSpec("flux2-klein-9b", "black-forest-labs/FLUX.2-klein-9B", True, "FLUX non-commercial"),
        ModelSpec("flux2-klein-base-4b", "black-forest-labs/FLUX.2-klein-base-4B", False, "Apache-2.0"),
        ModelSpec("flux2-klein-base-9b", "black-forest-labs/FLUX.2-klein-base-9B", False, "FLUX non-commercial"),
        ModelSpec("tiny", "tiny", True, "random weights, built locally"),
        ModelSpec("tiny-base", "tiny-base", False, "random weights, built locally"),
    )
}
DEFAULT_GPU_MODEL = "flux2-klein-4b"
TINY = "tiny"
TINY_BASE = "tiny-base"  # the tiny model, not distilled: classifier-free guidance, as the base models
TINY_MODELS = (TINY, TINY_BASE)
AUTO = "auto"


@dataclass(frozen=True)
class Limits:
    """What the app accepts from a user, checked before any work is done."""

    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_image_side: int = 64
    max_image_aspect: float = 8.0


@dataclass(frozen=True)
class Settings:
    """Everything the app is configured with. Built once by from_args and never changed."""

    model: str = AUTO
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    device: str | None = None
    dtype: str | None = None
    queue_size: int = 32
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    output_dir: Path | None = None
    prompt_cache_mb: int = 256
    lora_dir: Path = field(default_factory=lambda: default_lora_dir())
    max_loras_cached: int = 8
    hub_loras: bool = True  # requests may name Hugging Face hub LoRAs (downloaded once); False: the folder only
    compile: bool = False
    fuse_qkv: bool = False
    attention_backend: str | None = None
    offload: str = "auto"
    vae_tiling: bool = False
    mcp: bool = False
    public_page: bool = False  # with API keys set, keep the page and Gradio API open (a demo)
    max_safety_tolerance: int = MAX_SAFETY_TOLERANCE
    image_moderation: bool = True
    limits: Limits = field(default_factory=Limits)
    workers: int = 0  # Ray Serve worker replicas (docs/workers.md); 0 with no ray_address: one process, no Ray
    ray_address: str | None = None

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        args = build_arg_parser(environ).parse_args(argv)
        return cls(
            model=args.model,
            host=args.host,
            port=args.port,
            share=args.share,
            device=args.device,
            dtype=args.dtype,
            queue_size=args.queue_size,
            cache_dir=Path(args.cache_dir),
            output_dir=Path(args.output_dir) if args.output_dir else None,
            prompt_cache_mb=args.prompt_cache_mb,
            lora_dir=Path(args.lora_dir),
            max_loras_cached=args.max_loras_cached,
            hub_loras=args.hub_loras,
            compile=args.compile,
            fuse_qkv=args.fuse_qkv,
            attention_backend=args.attention_backend,
            offload=args.offload,
            vae_tiling=args.vae_tiling,
            mcp=args.mcp,
            public_page=env_flag(environ, "KLEIN_PUBLIC_PAGE"),
            workers=args.workers,
            ray_address=args.ray_address,
            **safety_settings(environ),
        )


def default_lora_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "loras"  # beside app.py


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "klein-studio"


def env_text(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The variable's value, stripped; the default when it is unset or empty."""
    value = environ.get(name, "").strip()
    return value or default


def env_choice(environ: Mapping[str, str], name: str, choices: Sequence[str]) -> str | None:
    """One of `choices`, or None when unset; anything else is an error naming the variable."""
    value = env_text(environ, name)
    if value is not None and value not in choices:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def env_flag(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    """A yes/no variable: 1/true/yes/on or 0/false/no/off; anything else is an error naming it."""
    value = (env_text(environ, name) or "").lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(f"{name}: {value!r} is not a yes/no value (use 1 or 0)")


def env_number(environ: Mapping[str, str], name: str, default: float, *, integer: bool = False,
               minimum: float | None = None, maximum: float | None = None):
    """A number variable within [minimum, maximum]; an error naming it otherwise."""
    value = env_text(environ, name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not {kind}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        low = "" if minimum is None else f"{minimum:g}"
        high = "" if maximum is None else f"{maximum:g}"
        raise ValueError(f"{name}: {value!r} must be {kind} in {low}..{high}".replace(" in ..", ""))
    return number


def safety_settings(environ: Mapping[str, str]) -> dict:
    """KLEIN_MAX_SAFETY_TOLERANCE (0..5, default 5: requests above it are clamped to it) and
    KLEIN_IMAGE_MODERATION (default on)."""
    return {
        "max_safety_tolerance": env_number(environ, "KLEIN_MAX_SAFETY_TOLERANCE", MAX_SAFETY_TOLERANCE,
                                           integer=True, minimum=0, maximum=MAX_SAFETY_TOLERANCE),
        "image_moderation": env_flag(environ, "KLEIN_IMAGE_MODERATION", True),
    }


def build_arg_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py", description="Klein Studio: FLUX.2 [klein] text-to-image, editing and multi-reference."
    )
    parser.add_argument(
        "--model",
        default=env_text(environ, "KLEIN_MODEL", AUTO),
        help="auto (default: flux2-klein-4b with a GPU, tiny without), tiny, a name from the model table "
        f"({', '.join(n for n in MODELS if n not in TINY_MODELS)}), tiny-base, a Hugging Face hub id, or a local folder. Env KLEIN_MODEL.",
    )
    parser.add_argument(
        "--host",
        default=env_text(environ, "KLEIN_HOST") or env_text(environ, "GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1; env KLEIN_HOST or GRADIO_SERVER_NAME, set on Spaces)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env_number(environ, "GRADIO_SERVER_PORT", 7860, integer=True, minimum=0, maximum=65535),
        help="port (default 7860; env GRADIO_SERVER_PORT)",
    )
    parser.add_argument(
        "--share", action="store_true", default=env_flag(environ, "KLEIN_SHARE"), help="create a Gradio share link"
    )
    parser.add_argument("--device", default=env_text(environ, "KLEIN_DEVICE"), help="cuda, cpu, mps... (default: best)")
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        default=env_choice(environ, "KLEIN_DTYPE", DTYPE_NAMES),
        help="weights dtype (default: bf16 on CUDA, fp32 elsewhere)",
    )
    parser.add_argument(
        "--queue-size", type=int, default=env_number(environ, "KLEIN_QUEUE_SIZE", 32, integer=True, minimum=1),
        help="requests that may wait for the GPU; more are refused (default 32)",
    )
    parser.add_argument(
        "--cache-dir", default=env_text(environ, "KLEIN_CACHE_DIR", str(default_cache_dir())), help="tiny model folder"
    )
    parser.add_argument(
        "--output-dir", default=env_text(environ, "KLEIN_OUTPUT_DIR"), help="where results are written (default: temp)"
    )
    parser.add_argument("--mcp", action="store_true", default=env_flag(environ, "GRADIO_MCP_SERVER"),
                        help="also serve the workflows as MCP tools at /gradio_api/mcp/ (env GRADIO_MCP_SERVER)")
    parser.add_argument(
        "--prompt-cache-mb",
        type=int,
        default=env_number(environ, "KLEIN_PROMPT_CACHE_MB", 256, integer=True, minimum=0),
        help="memory for cached prompt embeddings, so a repeated prompt skips the text encoder (0: off)",
    )
    parser.add_argument("--lora-dir", default=env_text(environ, "KLEIN_LORA_DIR", str(default_lora_dir())),
                        help="folder of the LoRA adapters requests may name (default loras/ beside app.py)")
    parser.add_argument("--max-loras-cached", type=int, metavar="N", help="LoRA adapters kept loaded; past N the least "
                        "recently used is unloaded (default 8)",
                        default=env_number(environ, "KLEIN_MAX_LORAS_CACHED", 8, integer=True, minimum=1))
    parser.add_argument("--no-hub-loras", dest="hub_loras", action="store_false",
                        default=not env_flag(environ, "KLEIN_NO_HUB_LORAS"),
                        help="refuse LoRAs named by Hugging Face hub id or URL (no downloads on a request's behalf): "
                        "only the LoRA folder's (env KLEIN_NO_HUB_LORAS)")
    memory = parser.add_argument_group("GPU memory (README: Memory)")
    memory.add_argument(
        "--offload", choices=OFFLOAD_MODES, default=env_choice(environ, "KLEIN_OFFLOAD", OFFLOAD_MODES) or "auto",
        help="auto (default: the fastest mode that fits the free GPU memory), none (everything on the GPU), model "
        "(each component moves to the GPU while it runs), sequential (each layer does: slowest, least memory); "
        "env KLEIN_OFFLOAD")
    memory.add_argument("--vae-tiling", action="store_true", default=env_flag(environ, "KLEIN_VAE_TILING"),
                        help="decode large images in tiles (less memory; on by itself when memory is short; "
                        "env KLEIN_VAE_TILING)")
    gpu = parser.add_argument_group("GPU speed-ups (off by default; see docs/BENCHMARKS.md)")
    gpu.add_argument("--compile", action="store_true", default=env_flag(environ, "KLEIN_COMPILE"),
                     help="torch.compile the transformer's repeated blocks (slow first image, faster after)")
    gpu.add_argument("--fuse-qkv", action="store_true", default=env_flag(environ, "KLEIN_FUSE_QKV"),
                     help="fuse the attention q/k/v projections into one matmul")
    gpu.add_argument("--attention-backend", default=env_text(environ, "KLEIN_ATTENTION_BACKEND"),
                     help="diffusers attention backend, e.g. native, _native_cudnn, flash, _flash_3")
    workers = parser.add_argument_group("Workers: one per GPU on Ray Serve (see docs/workers.md)")
    workers.add_argument("--workers", type=int, metavar="N",
                         default=env_number(environ, "KLEIN_WORKERS", 0, integer=True, minimum=0),
                         help="start a local Ray instance with N worker replicas: one per GPU, or N CPU workers "
                         "without GPUs (env KLEIN_WORKERS; default 0: one process, no Ray)")
    workers.add_argument("--ray-address", metavar="ADDRESS", default=env_text(environ, "KLEIN_RAY_ADDRESS"),
                         help="join this Ray cluster (e.g. 10.0.0.5:6379) and run a worker on each of its GPUs "
                         "(env KLEIN_RAY_ADDRESS)")
    return parser


def on_zero_gpu(environ: Mapping[str, str] | None = None) -> bool:
    """True on a Hugging Face ZeroGPU Space, where CUDA attaches only inside spaces.GPU calls."""
    environ = os.environ if environ is None else environ
    return env_flag(environ, "SPACES_ZERO_GPU")


def choose_model(requested: str, cuda_available: bool, zero_gpu: bool) -> tuple[str, str]:
    """Resolve `auto` to a model name. Returns (model, reason) for the log and the UI banner."""
    if requested != AUTO:
        return requested, f"requested with --model {requested}"
    if zero_gpu:
        return DEFAULT_GPU_MODEL, "auto: running on a ZeroGPU Space"
    if cuda_available:
        return DEFAULT_GPU_MODEL, "auto: a CUDA GPU is available"
    return TINY, "auto: no CUDA GPU found, so the tiny random-weight model runs (its images are noise)"


@dataclass(frozen=True)
class RestSettings:
    """How the REST API behaves; every field has an environment variable (docs/rest.md).

    The API keys and the webhook secret are kept out of repr() so they never reach a log.
    """

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
    shutdown_grace: float = 20.0  # seconds the running task may take to finish when the server stops

    @property
    def results_path(self) -> Path:
        return self.results_dir or self.tasks_db.parent / "results"

    @classmethod
    def from_env(cls, cache_dir: Path, environ: Mapping[str, str] | None = None) -> "RestSettings":
        """Read KLEIN_* variables; raises ValueError naming the variable when one is malformed."""
        env = os.environ if environ is None else environ
        positive = {"minimum": 1e-9}
        results_dir = env_text(env, "KLEIN_RESULTS_DIR")
        return cls(
            api_keys=load_api_keys(env),
            generation_timeout=env_number(env, "KLEIN_GENERATION_TIMEOUT", 300.0, **positive),
            allow_remote_images=env_flag(env, "KLEIN_ALLOW_REMOTE_IMAGES", True),
            allow_private_urls=env_flag(env, "KLEIN_ALLOW_PRIVATE_URLS", False),
            fetch_timeout=env_number(env, "KLEIN_FETCH_TIMEOUT", 10.0, **positive),
            webhook_secret=env_text(env, "KLEIN_WEBHOOK_SECRET"),
            webhook_attempts=env_number(env, "KLEIN_WEBHOOK_ATTEMPTS", 5, integer=True, minimum=1),
            webhook_backoff=env_number(env, "KLEIN_WEBHOOK_BACKOFF", 1.0, **positive),
            webhook_timeout=env_number(env, "KLEIN_WEBHOOK_TIMEOUT", 10.0, **positive),
            tasks_db=Path(env_text(env, "KLEIN_TASKS_DB") or Path(cache_dir) / "tasks.db"),
            results_dir=Path(results_dir) if results_dir else None,
            result_ttl=env_number(env, "KLEIN_RESULT_TTL", 24 * 3600.0, **positive),
            task_backlog=env_number(env, "KLEIN_TASK_BACKLOG", 32, integer=True, minimum=1),
            sync_backlog=env_number(env, "KLEIN_SYNC_BACKLOG", 8, integer=True, minimum=1),
            shutdown_grace=env_number(env, "KLEIN_SHUTDOWN_GRACE", 20.0, minimum=0),
        )


def load_api_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """Keys from KLEIN_API_KEYS (comma-separated) and KLEIN_API_KEYS_FILE (one a line, # comments)."""
    keys = [k.strip() for k in env.get("KLEIN_API_KEYS", "").split(",")]
    path = env_text(env, "KLEIN_API_KEYS_FILE")
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"KLEIN_API_KEYS_FILE: cannot read {path!r} ({type(exc).__name__})") from None
        keys += [line.strip() for line in lines if not line.strip().startswith("#")]
    return tuple(dict.fromkeys(k for k in keys if k))


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def owner_id(key: str) -> str:
    """What a task stores about the key that created it."""
    return hashlib.sha256(b"klein-task-owner:" + key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKeys:
    """The configured keys, kept as digests and compared in constant time."""

    def __init__(self, keys: Iterable[str]):
        self._digests = tuple(_digest(k) for k in keys if k)
        # A key that never leaves the process, for the app's own loopback calls (Gradio's MCP server
        # calls the Gradio API over HTTP). Valid only where configured keys are.
        self.internal = secrets.token_urlsafe(32)
        self._candidates = self._digests + ((_digest(self.internal),) if self._digests else ())

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._digests)} keys)"

    def is_valid(self, presented: str) -> bool:
        """True when `presented` is one of the keys; looks at every key whatever the answer."""
        candidate = _digest(presented)
        found = False
        for digest in self._candidates:
            found |= hmac.compare_digest(digest, candidate)
        return found
