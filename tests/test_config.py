import re
from pathlib import Path

import pytest

from klein.config import MODELS, RestSettings, Settings, choose_model, on_zero_gpu


def test_model_table_matches_design():
    assert MODELS["flux2-klein-4b"].hub_id == "black-forest-labs/FLUX.2-klein-4B"
    assert (MODELS["flux2-klein-9b"].steps, MODELS["flux2-klein-9b"].guidance) == (4, 1.0)
    assert (MODELS["flux2-klein-base-4b"].steps, MODELS["flux2-klein-base-4b"].guidance) == (50, 4.0)
    assert MODELS["flux2-klein-base-9b"].hub_id == "black-forest-labs/FLUX.2-klein-base-9B"
    assert MODELS["flux2-klein-4b"].distilled and not MODELS["flux2-klein-base-4b"].distilled


def test_auto_chooses_by_hardware_and_says_why():
    assert choose_model("auto", True, False)[0] == "flux2-klein-4b"
    assert choose_model("auto", False, True) == ("flux2-klein-4b", "auto: running on a ZeroGPU Space")
    name, reason = choose_model("auto", False, False)
    assert name == "tiny" and "no CUDA GPU" in reason
    assert choose_model("flux2-klein-9b", False, False)[0] == "flux2-klein-9b"


def test_zero_gpu_flag():
    assert on_zero_gpu({"SPACES_ZERO_GPU": "true"}) and not on_zero_gpu({})


def test_flags_and_environment():
    defaults = Settings.from_args([], environ={})
    assert (defaults.model, defaults.host, defaults.port, defaults.share) == ("auto", "127.0.0.1", 7860, False)
    env = {"KLEIN_MODEL": "tiny", "GRADIO_SERVER_PORT": "9000", "KLEIN_CACHE_DIR": "/tmp/kc"}
    settings = Settings.from_args([], environ=env)
    assert (settings.model, settings.port, settings.cache_dir) == ("tiny", 9000, Path("/tmp/kc"))
    flags = Settings.from_args(["--model", "flux2-klein-9b", "--port", "8000", "--share", "--host", "0.0.0.0",
                                "--device", "cuda", "--dtype", "bf16", "--queue-size", "4"], environ=env)
    assert (flags.model, flags.port, flags.share, flags.host) == ("flux2-klein-9b", 8000, True, "0.0.0.0")
    assert (flags.device, flags.dtype, flags.queue_size) == ("cuda", "bf16", 4)


def test_host_follows_gradio_server_name_as_on_spaces():
    assert Settings.from_args([], environ={"GRADIO_SERVER_NAME": "0.0.0.0"}).host == "0.0.0.0"
    assert Settings.from_args([], environ={"GRADIO_SERVER_NAME": "0.0.0.0", "KLEIN_HOST": "::1"}).host == "::1"
    assert Settings.from_args(["--mcp"], environ={}).mcp and Settings.from_args([], {"GRADIO_MCP_SERVER": "1"}).mcp


BAD_VALUES = [
    ({"KLEIN_SHARE": "maybe"}, "KLEIN_SHARE: 'maybe' is not a yes/no value"),
    ({"GRADIO_MCP_SERVER": "enabled"}, "GRADIO_MCP_SERVER: 'enabled' is not a yes/no value"),
    ({"KLEIN_COMPILE": "2"}, "KLEIN_COMPILE: '2' is not a yes/no value"),
    ({"KLEIN_IMAGE_MODERATION": "nope"}, "KLEIN_IMAGE_MODERATION: 'nope' is not a yes/no value"),
    ({"GRADIO_SERVER_PORT": "http"}, "GRADIO_SERVER_PORT: 'http' is not an integer"),
    ({"KLEIN_QUEUE_SIZE": "0"}, "KLEIN_QUEUE_SIZE: '0' must be an integer in 1.."),
    ({"KLEIN_PROMPT_CACHE_MB": "lots"}, "KLEIN_PROMPT_CACHE_MB: 'lots' is not an integer"),
    ({"KLEIN_DTYPE": "int8"}, "KLEIN_DTYPE: 'int8' is not one of bf16, fp16, fp32"),
    ({"KLEIN_MAX_SAFETY_TOLERANCE": "9"}, "KLEIN_MAX_SAFETY_TOLERANCE: '9' must be an integer in 0..5"),
]


@pytest.mark.parametrize("environ, message", BAD_VALUES)
def test_an_unreadable_variable_is_an_error_naming_it(environ, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Settings.from_args([], environ=environ)


REST_BAD_VALUES = [
    ({"KLEIN_ALLOW_REMOTE_IMAGES": "sometimes"}, "KLEIN_ALLOW_REMOTE_IMAGES: 'sometimes' is not a yes/no value"),
    ({"KLEIN_ALLOW_PRIVATE_URLS": "y"}, "KLEIN_ALLOW_PRIVATE_URLS: 'y' is not a yes/no value"),
    ({"KLEIN_SYNC_BACKLOG": "0"}, "KLEIN_SYNC_BACKLOG: '0' must be an integer in 1.."),
    ({"KLEIN_GENERATION_TIMEOUT": "soon"}, "KLEIN_GENERATION_TIMEOUT: 'soon' is not a number"),
    ({"KLEIN_WEBHOOK_ATTEMPTS": "2.5"}, "KLEIN_WEBHOOK_ATTEMPTS: '2.5' is not an integer"),
]


@pytest.mark.parametrize("environ, message", REST_BAD_VALUES)
def test_an_unreadable_rest_variable_is_an_error_naming_it(environ, message, tmp_path):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        RestSettings.from_env(tmp_path, environ)


def test_flags_read_one_way_everywhere(tmp_path):
    for word, expected in (("1", True), ("Yes", True), ("on", True), ("0", False), ("off", False), ("", False)):
        assert Settings.from_args([], {"KLEIN_SHARE": word}).share is expected, word
        assert RestSettings.from_env(tmp_path, {"KLEIN_ALLOW_PRIVATE_URLS": word}).allow_private_urls is expected
    assert Settings.from_args([], {"KLEIN_IMAGE_MODERATION": "0"}).image_moderation is False
    assert Settings.from_args([], {}).image_moderation is True  # on unless turned off


def test_main_reports_a_bad_variable_in_one_line(capsys, caplog, monkeypatch):
    import app

    monkeypatch.setenv("KLEIN_SHARE", "maybe")
    assert app.main([]) == 2
    assert "KLEIN_SHARE: 'maybe' is not a yes/no value" in caplog.text
