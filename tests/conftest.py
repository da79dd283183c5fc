"""Shared fixtures: the tiny model saved once per session, an engine over it, a launched app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("klein-cache")


@pytest.fixture(scope="session")
def tiny_model(cache_dir):
    from klein.generation.pipeline import load_model

    return load_model("tiny", cache_dir)


@pytest.fixture(scope="session")
def engine(tiny_model, tmp_path_factory):
    from klein.config import Settings
    from klein.generation.engine import Engine

    settings = Settings(model="tiny", cache_dir=tiny_model.source, output_dir=tmp_path_factory.mktemp("outputs"))
    return Engine(tiny_model, settings, "test")


def make_image(size=(320, 240), color=(200, 40, 40), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited early with code {process.returncode}")
        try:
            # 401: up, with API keys set (the Gradio API then needs one too)
            if httpx.get(url + "gradio_api/info", timeout=2).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"app did not start within {timeout}s")


@pytest.fixture(scope="session")
def app_output_dir(tmp_path_factory) -> Path:
    """Where the launched app writes its results."""
    return tmp_path_factory.mktemp("app-out")


@pytest.fixture(scope="session")
def app_log_path(tmp_path_factory) -> Path:
    """Where the launched app's stdout and stderr go."""
    return tmp_path_factory.mktemp("app-log") / "app.log"


APP_LORA = "ink.safetensors"  # the adapter in the launched app's LoRA folder


@pytest.fixture(scope="session")
def app_lora_dir(tmp_path_factory, tiny_model) -> Path:
    """The launched app's LoRA folder, holding one real adapter for the tiny transformer (APP_LORA)."""
    from tests.conftest_loras import lora_state_dict, save_diffusers

    folder = tmp_path_factory.mktemp("app-loras")
    save_diffusers(lora_state_dict(tiny_model.source, seed=3), folder, APP_LORA)
    return folder


@pytest.fixture(scope="session")
def app_url(cache_dir, app_output_dir, app_log_path, app_lora_dir):
    """`python app.py --model tiny` launched as a user would, on a free port, with a LoRA in its folder."""
    port = free_port()
    log_path = app_log_path
    env = {**os.environ, "KLEIN_CACHE_DIR": str(cache_dir), "KLEIN_OUTPUT_DIR": str(app_output_dir)}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port),
             "--lora-dir", str(app_lora_dir)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(url, process)
        yield url
    except Exception:
        print(log_path.read_text()[-5000:])
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
