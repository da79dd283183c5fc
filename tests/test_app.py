"""app.py as a user runs it: start-up errors and what the page says about the model."""

import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT


def start(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.mark.parametrize("model", ["flux2-klein-4b", "/no/such/folder", "owner/missing-model"])
def test_unloadable_model_stops_start_up_with_one_clear_message(model):
    result = start("--model", model, "--port", "1")
    assert result.returncode == 2
    assert f"Could not load model {model!r}" in result.stderr and "--model tiny" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_can_come_from_the_environment():
    result = start("--port", "1", env={"KLEIN_MODEL": "flux2-klein-base-9b"})
    assert result.returncode == 2 and "Could not load model 'flux2-klein-base-9b'" in result.stderr


def test_help_lists_the_flags():
    out = start("--help").stdout
    for flag in ("--model", "--host", "--port", "--share", "--device", "--dtype"):
        assert flag in out


def test_page_says_the_tiny_model_makes_noise(app_url):
    config = httpx.get(app_url + "config", timeout=10).text
    assert "Model **tiny** on cpu" in config and "its images are noise" in config
