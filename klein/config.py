"""Settings read from flags and the environment, the limits, and the model registry (pure)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence


@dataclass(frozen=True)
class ModelSpec:
    """A row of the model table in DESIGN.md."""

    name: str
    hub_id: str
    steps: int
    guidance: float
    licence: str

    @property
    def distilled(self) -> bool:
        return self.steps <= 8


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("flux2-klein-4b", "black-forest-labs/FLUX.2-klein-4B", 4, 1.0, "Apache-2.0"),
        ModelSpec("flux2-klein-9b", "black-forest-labs/FLUX.2-klein-9B", 4, 1.0, "FLUX non-commercial"),
        ModelSpec("flux2-klein-base-4b", "black-forest-labs/FLUX.2-klein-base-4B", 50, 4.0, "Apache-2.0"),
        ModelSpec("flux2-klein-base-9b", "black-forest-labs/FLUX.2-klein-base-9B", 50, 4.0, "FLUX non-commercial"),
        ModelSpec("tiny", "tiny", 4, 1.0, "random weights, built locally"),
    )
}
DEFAULT_GPU_MODEL = "flux2-klein-4b"
TINY = "tiny"
AUTO = "auto"


@dataclass(frozen=True)
class Limits:
    """What the app accepts from a user, checked before any work is done."""

    max_references: int = 4
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_image_side: int = 64
    max_image_aspect: float = 8.0
    min_steps: int = 1
    max_steps: int = 100
    min_guidance: float = 0.0
    max_guidance: float = 20.0


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
    concurrency_limit: int = 1
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    output_dir: Path | None = None
    prompt_cache_mb: int = 256
    compile: bool = False
    fuse_qkv: bool = False
    attention_backend: str | None = None
    mcp: bool = False
    limits: Limits = field(default_factory=Limits)

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
            concurrency_limit=args.concurrency_limit,
            cache_dir=Path(args.cache_dir),
            output_dir=Path(args.output_dir) if args.output_dir else None,
            prompt_cache_mb=args.prompt_cache_mb,
            compile=args.compile,
            fuse_qkv=args.fuse_qkv,
            attention_backend=args.attention_backend,
            mcp=args.mcp,
        )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "klein-studio"


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_arg_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py", description="Klein Studio: FLUX.2 [klein] text-to-image, editing and multi-reference."
    )
    parser.add_argument(
        "--model",
        default=environ.get("KLEIN_MODEL", AUTO),
        help="auto (default: flux2-klein-4b with a GPU, tiny without), tiny, a name from the model table "
        f"({', '.join(n for n in MODELS if n != TINY)}), a Hugging Face hub id, or a local folder. Env KLEIN_MODEL.",
    )
    parser.add_argument(
        "--host",
        default=environ.get("KLEIN_HOST") or environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        help="address to listen on (default 127.0.0.1; env KLEIN_HOST or GRADIO_SERVER_NAME, set on Spaces)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(environ.get("GRADIO_SERVER_PORT", "7860")),
        help="port (default 7860; env GRADIO_SERVER_PORT)",
    )
    parser.add_argument(
        "--share", action="store_true", default=_env_flag(environ, "KLEIN_SHARE"), help="create a Gradio share link"
    )
    parser.add_argument("--device", default=environ.get("KLEIN_DEVICE"), help="cuda, cpu, mps... (default: best)")
    parser.add_argument(
        "--dtype",
        choices=("bf16", "fp16", "fp32"),
        default=environ.get("KLEIN_DTYPE"),
        help="weights dtype (default: bf16 on CUDA, fp32 elsewhere)",
    )
    parser.add_argument(
        "--queue-size", type=int, default=int(environ.get("KLEIN_QUEUE_SIZE", "32")), help="max waiting requests"
    )
    parser.add_argument(
        "--concurrency-limit",
        type=int,
        default=int(environ.get("KLEIN_CONCURRENCY_LIMIT", "1")),
        help="generations that may run at once (default 1: one GPU lane)",
    )
    parser.add_argument(
        "--cache-dir", default=environ.get("KLEIN_CACHE_DIR", str(default_cache_dir())), help="tiny model folder"
    )
    parser.add_argument(
        "--output-dir", default=environ.get("KLEIN_OUTPUT_DIR"), help="where results are written (default: temp)"
    )
    parser.add_argument(
        "--mcp",
        action="store_true",
        default=_env_flag(environ, "GRADIO_MCP_SERVER"),
        help="also serve the three workflows as MCP tools at /gradio_api/mcp/ (env GRADIO_MCP_SERVER)",
    )
    parser.add_argument(
        "--prompt-cache-mb",
        type=int,
        default=int(environ.get("KLEIN_PROMPT_CACHE_MB", "256")),
        help="memory for cached prompt embeddings, so a repeated prompt skips the text encoder (0: off)",
    )
    gpu = parser.add_argument_group("GPU speed-ups (off by default; see docs/BENCHMARKS.md)")
    gpu.add_argument("--compile", action="store_true", default=_env_flag(environ, "KLEIN_COMPILE"),
                     help="torch.compile the transformer's repeated blocks (slow first image, faster after)")
    gpu.add_argument("--fuse-qkv", action="store_true", default=_env_flag(environ, "KLEIN_FUSE_QKV"),
                     help="fuse the attention q/k/v projections into one matmul")
    gpu.add_argument("--attention-backend", default=environ.get("KLEIN_ATTENTION_BACKEND"),
                     help="diffusers attention backend, e.g. native, _native_cudnn, flash, _flash_3")
    return parser


def on_zero_gpu(environ: Mapping[str, str] | None = None) -> bool:
    """True on a Hugging Face ZeroGPU Space, where CUDA attaches only inside spaces.GPU calls."""
    environ = os.environ if environ is None else environ
    return _env_flag(environ, "SPACES_ZERO_GPU")


def choose_model(requested: str, cuda_available: bool, zero_gpu: bool) -> tuple[str, str]:
    """Resolve `auto` to a model name. Returns (model, reason) for the log and the UI banner."""
    if requested != AUTO:
        return requested, f"requested with --model {requested}"
    if zero_gpu:
        return DEFAULT_GPU_MODEL, "auto: running on a ZeroGPU Space"
    if cuda_available:
        return DEFAULT_GPU_MODEL, "auto: a CUDA GPU is available"
    return TINY, "auto: no CUDA GPU found, so the tiny random-weight model runs (its images are noise)"
