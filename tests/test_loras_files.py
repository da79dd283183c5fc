"""Finding LoRAs without loading them: the request's checks, the LoRA folder (names, folders, what may
not be named), the file's format read from its header, and the hub (offline here: a clear error, and
a file already in the cache still works). No model runs in this file."""

from __future__ import annotations

import os

import pytest
import torch
from conftest_loras import save_lokr, save_truncated
from safetensors.torch import save_file

from klein.config import Settings
from klein.errors import InvalidRequest
from klein.generation.loras import LoraLibrary
from klein.output.encode import a1111_parameters, parse_a1111_parameters
from klein.request import GenerationRequest, LoraSpec

LORA = {"x.lora_A.weight": torch.zeros(4, 8), "x.lora_B.weight": torch.zeros(8, 4)}


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "loras"
    (root / "styles" / "ink").mkdir(parents=True)
    save_file(LORA, str(root / "style.safetensors"))
    save_file(LORA, str(root / "styles" / "pencil.safetensors"))
    save_file(LORA, str(root / "styles" / "ink" / "one.safetensors"))
    save_file(LORA, str(root / "styles" / "ink" / "two.safetensors"))
    (root / "notes.txt").write_text("not an adapter")
    (root / "old.ckpt").write_bytes(b"pickle")
    save_file(LORA, str(tmp_path / "secret.safetensors"))  # beside the folder: never reachable by a request
    return root


def found(library: LoraLibrary, path: str, weight_name: str | None = None):
    return library.find(LoraSpec(path, 1.0, weight_name), "loras[0]")


def refused(library: LoraLibrary, path: str, weight_name: str | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        found(library, path, weight_name)
    assert caught.value.field == "loras[0].path"
    return caught.value


# -- the request's checks --------------------------------------------------------------------------

@pytest.mark.parametrize("loras,field,words", [
    ([{"path": "a"}] * 2 + [{"path": "b"}, {"path": "c"}], "loras", "4 LoRAs given, at most 3"),
    ([{"path": "a", "scale": 4.5}], "loras[0].scale", "4.5 is out of range -1..4"),
    ([{"path": "a"}, {"path": "b", "scale": -1.5}], "loras[1].scale", "out of range -1..4"),
    ([{"path": "a", "scale": True}], "loras[0].scale", "must be a number"),
    ([{"path": "a", "scale": float("nan")}], "loras[0].scale", "must be a number"),
    ([{"path": "a", "scale": "1"}], "loras[0].scale", "must be a number"),
    ([{"scale": 1}], "loras[0].path", "is missing"),
    ([{"path": "  "}], "loras[0].path", "is empty"),
    ([{"path": 5}], "loras[0].path", "must be text"),
    ([{"path": "a\nb"}], "loras[0].path", "control characters"),
    ([{"path": "a", "colour": 1}], "loras[0].colour", "is not a field of a LoRA"),
    ([{"path": "a", "weight_name": "w.bin"}], "loras[0].weight_name", "not a .safetensors file name"),
    ([{"path": "a"}, {"path": "a", "scale": 0.5}], "loras[1].path", "is loras[0] already"),
    ("a.safetensors", "loras", "must be a list"),
    ([["a", 1]], "loras[0]", "must be {path, scale}"),
])
def test_bad_loras_are_refused_naming_the_field(loras, field, words):
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest(prompt="fox", loras=loras)
    assert caught.value.field == field and words in str(caught.value)


def test_loras_become_specs_with_scale_one_by_default():
    request = GenerationRequest(prompt="fox", loras=[{"path": " a "}, LoraSpec("o/n", -1, "w.safetensors")])
    assert request.loras == (LoraSpec("a", 1.0), LoraSpec("o/n", -1.0, "w.safetensors"))
    assert request.loras[1].to_dict() == {"path": "o/n", "scale": -1.0, "weight_name": "w.safetensors"}
    assert GenerationRequest(prompt="fox", loras=None).loras == ()


# -- the LoRA folder -------------------------------------------------------------------------------

def test_available_lists_the_safetensors_files_by_their_names(folder):
    infos = LoraLibrary(folder).available()
    assert [i.name for i in infos] == ["style.safetensors", "styles/ink/one.safetensors",
                                       "styles/ink/two.safetensors", "styles/pencil.safetensors"]
    assert all(i.path.is_file() and i.size_bytes > 0 for i in infos)
    assert LoraLibrary(folder / "missing").available() == []


@pytest.mark.parametrize("path,weight_name,label", [
    ("style", None, "style.safetensors"),
    ("style.safetensors", None, "style.safetensors"),
    ("styles/pencil", None, "styles/pencil.safetensors"),
    ("styles/ink", "two.safetensors", "styles/ink/two.safetensors"),
])
def test_names_in_the_folder_are_found(folder, path, weight_name, label):
    lora = found(LoraLibrary(folder), path, weight_name)
    assert lora.label == label and lora.file == str(folder / label) and lora.field == "loras[0]"


def test_an_absolute_path_inside_the_folder_is_found_by_its_place_there(folder):
    assert found(LoraLibrary(folder), str(folder / "styles" / "pencil.safetensors")).label == \
        "styles/pencil.safetensors"


@pytest.mark.parametrize("path,words", [
    ("../secret.safetensors", "leaves the LoRA folder"),
    ("styles/../../x.safetensors", "leaves the LoRA folder"),
    ("/etc/passwd", "is outside the LoRA folder"),
    ("old.ckpt", "is not a .safetensors file"),
    ("notes.txt", "is not a .safetensors file"),
    ("styles/ink", "has several .safetensors files (one.safetensors, two.safetensors); say which with weight_name"),
    ("missing", "is not in the LoRA folder and is not a hub id"),
    ("0" * 1000, "is not in the LoRA folder and is not a hub id"),  # too long a name for the file system
    ("ftp://example.com/x.safetensors", "only huggingface.co file URLs are fetched"),
])
def test_what_cannot_be_named_is_refused(folder, path, words):
    assert words in str(refused(LoraLibrary(folder), path))


def test_the_refusal_lists_what_the_folder_has(folder):
    assert "the LoRA folder has style.safetensors, styles/ink/one.safetensors" in str(refused(LoraLibrary(folder), "x"))


def test_a_changed_file_gets_a_new_adapter_name(folder):
    library = LoraLibrary(folder)
    before = found(library, "style").name
    assert found(library, "style").name == before
    save_file({**LORA, "y.lora_A.weight": torch.zeros(4, 8)}, str(folder / "style.safetensors"))
    os.utime(folder / "style.safetensors", ns=(1, 1))
    assert found(library, "style").name != before


def test_scale_zero_is_off_and_not_even_looked_up(folder):
    resolved = LoraLibrary(folder).resolve((LoraSpec("nowhere", 0.0), LoraSpec("style", 0.5)))
    assert [(lora.label, lora.scale, lora.field) for lora in resolved] == [("style.safetensors", 0.5, "loras[1]")]


def test_create_folder_makes_it_empty(tmp_path):
    library = LoraLibrary(tmp_path / "new" / "loras")
    library.create_folder()
    assert library.folder.is_dir() and library.available() == []


# -- the format, from the header ---------------------------------------------------------------------

def test_a_file_that_is_not_safetensors_is_refused(folder):
    (folder / "junk.safetensors").write_bytes(b"definitely not a safetensors file")
    assert "'junk.safetensors' is not a readable .safetensors file" in str(refused(LoraLibrary(folder), "junk"))


def test_a_truncated_file_is_refused(folder):
    save_truncated(folder / "cut.safetensors")
    assert "shorter than its header says" in str(refused(LoraLibrary(folder), "cut"))


def test_lokr_is_refused_as_unsupported(folder):
    save_lokr(folder / "lokr.safetensors")
    assert "'lokr.safetensors' is a LoKr adapter; its format is not supported here" in \
        str(refused(LoraLibrary(folder), "lokr"))


@pytest.mark.parametrize("keys,kind", [
    ({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, "is a LoHa adapter"),
    ({"x.lora_A.weight": torch.zeros(2, 2), "x.dora_scale": torch.zeros(2)}, "is a DoRA adapter"),
    ({"transformer.proj_out.weight": torch.zeros(2, 2)}, "has no LoRA weights"),
])
def test_other_adapter_types_and_plain_weights_are_refused(folder, keys, kind):
    save_file(keys, str(folder / "other.safetensors"))
    error = str(refused(LoraLibrary(folder), "other"))
    assert kind in error and "not supported" in error


# -- the hub (no network here; the tests run with HF_HUB_OFFLINE=1) ---------------------------------

def test_a_hub_lora_offline_and_not_cached_is_a_clear_422(folder, tmp_path):
    error = str(refused(LoraLibrary(folder, hub_cache=tmp_path / "hub"), "someone/klein-style"))
    assert "'someone/klein-style' is not in the Hugging Face cache and the hub cannot be reached" in error
    error = str(refused(LoraLibrary(folder, hub_cache=tmp_path / "hub"), "someone/klein-style", "w.safetensors"))
    assert "not in the Hugging Face cache" in error


def test_a_hub_lora_too_large_is_refused_before_downloading_and_without_the_servers_token(folder, tmp_path,
                                                                                          monkeypatch):
    """A stub of the hub's file listing (no network here) says the file is 3 GiB: refused, nothing fetched."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    from klein.generation import hub

    asked, downloads = [], []
    monkeypatch.setattr(HfApi, "get_paths_info", lambda self, repo, paths, revision=None, token=None: asked.append(
        token) or [SimpleNamespace(size=3 * 1024**3)])
    real_download = hub.hf_hub_download
    monkeypatch.setattr(hub, "hf_hub_download", lambda *args, **kwargs: kwargs.get("local_files_only") and
                        real_download(*args, **kwargs) or downloads.append(kwargs))
    error = str(refused(LoraLibrary(folder, hub_cache=tmp_path / "hub"), "someone/huge", "big.safetensors"))
    assert "is 3.0 GiB; LoRAs fetched for a request may be at most 2 GiB" in error
    assert asked == [False] and downloads == []  # anonymous, and never downloaded


def fake_hub_cache(cache, repo: str, files: list[str], commit: str = "a" * 40):
    """The layout huggingface_hub leaves after a download: refs/main and a snapshot per commit."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    for name in files:
        path = base / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(LORA, str(path))
    return base / "snapshots" / commit


@pytest.mark.parametrize("path,weight_name", [
    ("someone/klein-style", None),  # the repository's one file
    ("someone/klein-style", "style.safetensors"),
    ("someone/klein-style/style.safetensors", None),
    ("someone/klein-style/style", None),
    ("https://huggingface.co/someone/klein-style/resolve/main/style.safetensors", None),
])
def test_a_hub_lora_in_the_cache_works_offline(folder, tmp_path, path, weight_name):
    snapshot = fake_hub_cache(tmp_path / "hub", "someone/klein-style", ["style.safetensors"])
    lora = found(LoraLibrary(folder, hub_cache=tmp_path / "hub"), path, weight_name)
    assert lora.file == str(snapshot / "style.safetensors")
    assert lora.label in ("someone/klein-style", "someone/klein-style/style.safetensors")


def test_a_hub_repository_with_several_files_needs_weight_name(folder, tmp_path):
    fake_hub_cache(tmp_path / "hub", "someone/pack", ["a.safetensors", "b.safetensors"])
    library = LoraLibrary(folder, hub_cache=tmp_path / "hub")
    assert "has several .safetensors files (a.safetensors, b.safetensors)" in str(refused(library, "someone/pack"))
    assert found(library, "someone/pack", "b.safetensors").label == "someone/pack/b.safetensors"


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(folder, tmp_path):
    (folder / "someone").mkdir()
    save_file(LORA, str(folder / "someone" / "klein-style.safetensors"))
    assert found(LoraLibrary(folder, hub_cache=tmp_path / "hub"), "someone/klein-style").label == \
        "someone/klein-style.safetensors"


# -- the metadata's parameters text ---------------------------------------------------------------------

def test_lora_tags_round_trip_through_the_parameters_text():
    loras = [{"path": "styles/ink.safetensors", "scale": 0.8}, {"path": "someone/klein-style", "scale": -1.0},
             {"path": "https://huggingface.co/o/n/resolve/0a1b/f.safetensors", "scale": 1.25}]
    text = a1111_parameters({"prompt": "a fox: <red>", "seed": 1, "steps": 4, "width": 64, "height": 64,
                             "loras": loras})
    assert text.splitlines()[0] == ("a fox: <red> <lora:styles/ink:0.8> <lora:someone/klein-style:-1> "
                                    "<lora:https://huggingface.co/o/n/resolve/0a1b/f.safetensors:1.25>")
    parsed = parse_a1111_parameters(text)
    assert parsed["prompt"] == "a fox: <red>" and parsed["seed"] == 1
    assert parsed["loras"] == [{"path": "styles/ink", "scale": 0.8}, {"path": "someone/klein-style", "scale": -1.0},
                               {"path": "https://huggingface.co/o/n/resolve/0a1b/f.safetensors", "scale": 1.25}]
    assert "loras" not in parse_a1111_parameters("a fox\nSteps: 4, Seed: 1")


def test_a_tag_name_finds_its_file_again(folder):
    assert found(LoraLibrary(folder), "styles/pencil").label == "styles/pencil.safetensors"


# -- settings --------------------------------------------------------------------------------------

def test_lora_flags_and_environment(tmp_path):
    settings = Settings.from_args(["--lora-dir", str(tmp_path), "--max-loras-cached", "5"], environ={})
    assert settings.lora_dir == tmp_path and settings.max_loras_cached == 5
    settings = Settings.from_args([], environ={"KLEIN_LORA_DIR": str(tmp_path / "x"), "KLEIN_MAX_LORAS_CACHED": "4"})
    assert settings.lora_dir == tmp_path / "x" and settings.max_loras_cached == 4
    defaults = Settings.from_args([], environ={})
    assert defaults.lora_dir.name == "loras" and (defaults.lora_dir.parent / "app.py").is_file()
    assert defaults.max_loras_cached == 8


def test_a_cache_of_no_loras_is_refused():
    with pytest.raises(ValueError, match="KLEIN_MAX_LORAS_CACHED: '0' must be an integer in 1"):
        Settings.from_args([], environ={"KLEIN_MAX_LORAS_CACHED": "0"})


@pytest.mark.parametrize("path", ["someone/klein-style",
                                  "https://huggingface.co/someone/klein-style/resolve/main/style.safetensors"])
def test_with_hub_loras_off_a_hub_lora_is_refused_even_when_cached(folder, tmp_path, path, monkeypatch):
    from klein.generation import hub

    fake_hub_cache(tmp_path / "hub", "someone/klein-style", ["style.safetensors"])
    monkeypatch.setattr(hub, "hf_hub_download", lambda *a, **k: pytest.fail("a download was attempted"))
    error = str(refused(LoraLibrary(folder, hub_cache=tmp_path / "hub", allow_hub=False), path))
    assert "is a hub LoRA and this server loads only its LoRA folder's (--no-hub-loras)" in error
    assert "the LoRA folder has style.safetensors" in error
    assert found(LoraLibrary(folder, allow_hub=False), "style").label == "style.safetensors"  # the folder still works


def test_the_no_hub_loras_flag_and_its_environment_variable():
    from klein.config import Settings

    assert Settings.from_args([], {}).hub_loras is True
    assert Settings.from_args(["--no-hub-loras"], {}).hub_loras is False
    assert Settings.from_args([], {"KLEIN_NO_HUB_LORAS": "1"}).hub_loras is False


def test_an_engine_started_with_no_hub_loras_refuses_them_naming_the_field(tiny_model, tmp_path):
    from klein.config import Settings
    from klein.generation.engine import Engine
    from klein.request import GenerationRequest

    engine = Engine(tiny_model, Settings(output_dir=tmp_path, lora_dir=tmp_path / "loras", hub_loras=False))
    request = GenerationRequest(prompt="x", width=64, height=64, loras=[{"path": "someone/klein-style"}])
    with pytest.raises(InvalidRequest, match=r"^loras\[0\]\.path: 'someone/klein-style' is a hub LoRA"):
        engine.generate(request)
