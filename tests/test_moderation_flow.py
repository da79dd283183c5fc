"""Moderation on every path: the engine refuses before generating and before keeping anything."""

from __future__ import annotations

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from klein.errors import ContentModerated, RequestModerated
from klein.generation.engine import Engine
from klein.request import GenerationRequest
from klein.safety.nudity import Detection
from klein.safety.policy import Moderator
from tests.conftest import make_image

SMALL = dict(width=128, height=96)


class FlagEverythingStubDetector:
    """Stub detector (for the engine's flow only): reports exposed breasts in every image it sees."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return [Detection(label="FEMALE_BREAST_EXPOSED", score=0.9, box=(0, 0, 10, 10))]


def files_in(engine: Engine) -> set:
    return set(engine.output_dir.iterdir())


def test_refused_prompt_is_not_generated_written_or_cached(engine):
    before = files_in(engine)
    with pytest.raises(RequestModerated, match="^Request moderated: the prompt matched category sexual"):
        engine.generate(GenerationRequest(prompt="explicit porn scene", **SMALL))
    assert files_in(engine) == before
    assert engine.prompt_cache.get("explicit porn scene") is None


def test_tolerance_changes_the_outcome(engine):
    with pytest.raises(RequestModerated, match="tolerance 2 allows up to 1"):
        engine.generate(GenerationRequest(prompt="a nude woman", safety_tolerance=2, **SMALL))
    assert engine.generate(GenerationRequest(prompt="a nude woman", safety_tolerance=3, **SMALL)).width == 128


def test_flagged_output_is_content_moderated_and_not_written(tiny_model, tmp_path):
    from klein.config import Settings

    detector = FlagEverythingStubDetector()
    engine = Engine(tiny_model, Settings(output_dir=tmp_path), moderator=Moderator(detector=detector))
    with pytest.raises(ContentModerated, match="^Content moderated: the generated image was flagged as nudity"):
        engine.generate(GenerationRequest(prompt="a landscape", **SMALL))
    assert detector.calls == 1 and list(tmp_path.iterdir()) == []
    assert engine.generate(GenerationRequest(prompt="a landscape", safety_tolerance=5, **SMALL)).width == 128


def test_flagged_reference_is_request_moderated_naming_the_field(tiny_model, tmp_path):
    from klein.config import Settings

    engine = Engine(tiny_model, Settings(output_dir=tmp_path), moderator=Moderator(detector=FlagEverythingStubDetector()))
    with pytest.raises(RequestModerated, match=r"^Request moderated: images\[0\] was flagged as nudity"):
        engine.generate(GenerationRequest(prompt="x", images=(make_image(), make_image()), **SMALL))


def test_deployment_cap_clamps_the_tolerance(tiny_model, tmp_path):
    from klein.config import Settings

    engine = Engine(tiny_model, Settings(output_dir=tmp_path), moderator=Moderator(max_tolerance=1))
    with pytest.raises(RequestModerated, match="tolerance 1 allows"):
        engine.generate(GenerationRequest(prompt="a nude woman", safety_tolerance=5, **SMALL))


def test_moderation_time_is_reported(engine):
    result = engine.generate(GenerationRequest(prompt="a lighthouse", **SMALL))
    assert result.timings_ms["safety"] > 0


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.mark.parametrize("api_name, extra", [("/text_to_image", {}), ("/multi_reference", None)])
def test_refused_prompt_through_gradio_client(client, api_name, extra, tmp_path):
    if extra is None:
        from gradio_client import handle_file

        path = tmp_path / "ref.png"
        make_image((256, 256)).save(path)
        extra = {"images": [{"image": handle_file(str(path)), "caption": None}] * 2}
    with pytest.raises(AppError, match="Request moderated: the prompt matched category sexual at severity 3"):
        client.predict(prompt="explicit porn scene", api_name=api_name, **extra)


def test_safety_tolerance_is_an_endpoint_parameter(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/text_to_image", "/edit", "/multi_reference"):
        parameters = [p["parameter_name"] for p in endpoints[name]["parameters"]]
        assert parameters[-2:] == ["safety_tolerance", "num_images"]
    path, _, _, _ = client.predict(prompt="a nude woman", safety_tolerance=3, custom_size=True, width=128, height=128,
                                api_name="/text_to_image")
    with pytest.raises(AppError, match="safety_tolerance: 7 is out of range 0..5"):
        client.predict(prompt="a lighthouse", safety_tolerance=7, api_name="/text_to_image")
