from pathlib import Path

from klein.config import MODELS, Settings, choose_model, on_zero_gpu


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
                                "--device", "cuda", "--dtype", "bf16", "--concurrency-limit", "2"], environ=env)
    assert (flags.model, flags.port, flags.share, flags.host) == ("flux2-klein-9b", 8000, True, "0.0.0.0")
    assert (flags.device, flags.dtype, flags.concurrency_limit) == ("cuda", "bf16", 2)


def test_host_follows_gradio_server_name_as_on_spaces():
    assert Settings.from_args([], environ={"GRADIO_SERVER_NAME": "0.0.0.0"}).host == "0.0.0.0"
    assert Settings.from_args([], environ={"GRADIO_SERVER_NAME": "0.0.0.0", "KLEIN_HOST": "::1"}).host == "::1"
    assert Settings.from_args(["--mcp"], environ={}).mcp and Settings.from_args([], {"GRADIO_MCP_SERVER": "1"}).mcp
