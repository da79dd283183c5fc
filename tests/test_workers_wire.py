"""Workers without a Ray instance: single-process mode imports no Ray at all; the flags; the plan of
replicas from a cluster's resources; what travels between front and worker (plain data, references
as PNG bytes, errors with their type and field); and the front's retry and backpressure against a
stub deployment handle (a stand-in for Ray Serve's, so that a worker can die on cue)."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from klein.config import MODELS, Settings
from klein.errors import (
    ContentModerated,
    GenerationError,
    GenerationTimeout,
    InvalidRequest,
    QueueFull,
    RequestModerated,
)
from klein.request import GenerationRequest
from tests.conftest import ROOT


def test_single_process_mode_never_imports_ray(tiny_model):
    code = f"""
import sys
import app
from klein.config import RestSettings, Settings
settings = Settings(model="tiny", cache_dir={str(Path(tiny_model.source).parent.parent)!r})
engine, demo = app.create_app(settings)
app.create_rest(engine, RestSettings.from_env(settings.cache_dir))
from klein.request import GenerationRequest
engine.generate(GenerationRequest("a fox", width=64, height=64, steps=1))
print(sorted(m for m in sys.modules if m.split(".")[0] == "ray" or "workers" in m))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_two_flags_and_their_environment_variables():
    assert (Settings.from_args([], {}).workers, Settings.from_args([], {}).ray_address) == (0, None)
    assert Settings.from_args(["--workers", "4"], {}).workers == 4
    assert Settings.from_args([], {"KLEIN_WORKERS": "2"}).workers == 2
    assert Settings.from_args(["--ray-address", "10.0.0.5:6379"], {}).ray_address == "10.0.0.5:6379"
    assert Settings.from_args([], {"KLEIN_RAY_ADDRESS": "auto"}).ray_address == "auto"
    with pytest.raises(ValueError, match="KLEIN_WORKERS: '-1' must be an integer in 0"):
        Settings.from_args([], {"KLEIN_WORKERS": "-1"})


def test_negative_workers_are_refused_before_ray_starts():
    from klein.generation import workers_cluster

    with pytest.raises(ValueError, match="^--workers: -2 is not a number of workers"):
        workers_cluster.connect(Settings(workers=-2))


@pytest.mark.parametrize("workers, address, resources, expected", [
    (2, None, {"CPU": 2}, (2, 0)),  # no GPU: CPU workers
    (2, None, {"CPU": 16, "GPU": 4}, (2, 1)),  # one GPU each
    (0, "head:6379", {"CPU": 64, "GPU": 8}, (8, 1)),  # a cluster: one per GPU
    (0, "head:6379", {"CPU": 8}, "has no GPU; add --workers N"),
    (4, None, {"CPU": 16, "GPU": 2}, "--workers: 4 workers asked for, and this machine has 2 GPUs"),
    (3, None, {"CPU": 2}, "--workers: 3 CPU workers asked for, and this machine has 2 CPUs"),
])
def test_the_plan_of_replicas(monkeypatch, workers, address, resources, expected):
    from klein.generation import workers_cluster

    monkeypatch.setattr(workers_cluster.ray, "cluster_resources", lambda: resources)
    settings = Settings(workers=workers, ray_address=address)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            workers_cluster._plan(settings)
    else:
        plan = workers_cluster._plan(settings)
        assert (plan.replicas, plan.gpus_per_replica) == expected and plan.started_here == (address is None)


def test_workers_get_absolute_paths(tmp_path, monkeypatch):
    from klein.generation.workers_cluster import for_workers

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    sent = for_workers(Settings(model="my-model", cache_dir=Path("cache"), output_dir=Path("out")))
    assert sent.model == str(tmp_path / "my-model") and sent.cache_dir == tmp_path / "cache"
    assert sent.output_dir == tmp_path / "out"
    assert for_workers(Settings(model="tiny")).model == "tiny"


def test_a_request_travels_as_plain_data_and_arrives_with_the_same_pixels():
    from klein.generation.workers_replica import payload_for, request_from_payload

    rng = np.random.default_rng(0)
    refs = tuple(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((320, 240), (96, 128)))
    sent = GenerationRequest("the two together", images=refs, seed=7, steps=3, guidance=1.0, resolution="1k",
                             aspect_ratio="match_input", safety_tolerance=4, output_format="webp")
    payload = pickle.loads(pickle.dumps(payload_for(sent, 12.5)))
    assert all(isinstance(b, bytes) and b.startswith(b"\x89PNG") for b in payload["images"])
    assert not any(isinstance(v, Image.Image) for v in payload["fields"].values())
    arrived = request_from_payload(payload, Settings().limits)
    assert arrived == sent and payload["seconds_left"] == 12.5  # every field (images compare by pixels)
    for before, after in zip(sent.images, arrived.images):
        assert np.array_equal(np.asarray(before), np.asarray(after))


def test_an_inpaint_travels_with_its_mask_as_png_and_its_image_whole():
    from klein.generation.workers_replica import payload_for, request_from_payload

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (1080, 1440, 3), dtype=np.uint8))  # over 1 MP: not shrunk
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (100, 100, 400, 300))
    sent = GenerationRequest("a balloon", images=(image,), mask=mask, strength=0.75, seed=3, enhance_prompt=True)
    payload = pickle.loads(pickle.dumps(payload_for(sent, None)))
    assert payload["mask"].startswith(b"\x89PNG")
    assert not any(isinstance(v, Image.Image) for v in payload["fields"].values())
    arrived = request_from_payload(payload, Settings().limits)
    assert arrived.images[0].size == (1440, 1080) and np.array_equal(np.asarray(arrived.images[0]), np.asarray(image))
    assert np.array_equal(np.asarray(arrived.mask), np.asarray(mask))
    assert (arrived.strength, arrived.enhance_prompt, arrived.workflow.value) == (0.75, True, "inpaint")


def test_a_broken_reference_is_refused_naming_its_field():
    from klein.generation.workers_replica import payload_for, request_from_payload

    payload = payload_for(GenerationRequest("x", images=(Image.new("RGB", (64, 64)),) * 2, seed=1), None)
    payload["images"][1] = b"not an image"
    with pytest.raises(InvalidRequest, match=r"^images\[1\]: "):
        request_from_payload(payload, Settings().limits)


@pytest.mark.parametrize("error", [
    InvalidRequest("width", "1000 is not a multiple of 16"), RequestModerated("the prompt matched category x"),
    ContentModerated("flagged"), GenerationTimeout("took too long"), QueueFull("busy", retry_after=3),
])
def test_errors_cross_with_their_type_field_and_message(error):
    from klein.generation.workers_replica import error_event, error_from_event

    back = error_from_event(pickle.loads(pickle.dumps(error_event(error))))
    assert type(back) is type(error) and str(back) == str(error)
    assert getattr(back, "field", None) == getattr(error, "field", None)


def test_an_unexpected_worker_error_is_a_generation_error_without_its_insides():
    from klein.generation.workers_replica import error_event, error_from_event

    back = error_from_event(error_event(RuntimeError("CUDA error: secret path /home/x")))
    assert isinstance(back, GenerationError) and "secret" not in str(back) and "RuntimeError" in str(back)


# -- the front against a stub handle ---------------------------------------------------------------

class StubStream:
    """Stands in for Ray Serve's DeploymentResponseGenerator: the events of one call, or an error."""

    def __init__(self, events: list, error: BaseException | None = None):
        self.events, self.error, self.cancelled = events, error, False

    def __iter__(self):
        yield from self.events
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled = True


class StubHandle:
    """Stands in for a DeploymentHandle: `.options(stream=True).generate.remote(payload)` returns the next
    scripted StubStream."""

    def __init__(self, streams: list[StubStream]):
        self.streams, self.payloads = streams, []
        self.generate = self

    def options(self, stream: bool):
        return self

    def remote(self, payload: dict) -> StubStream:
        self.payloads.append(payload)
        return self.streams.pop(0)


@pytest.fixture(scope="module")
def made(engine):
    """A real result from the tiny engine, as a worker would send it."""
    from klein.generation.workers_replica import result_event

    batch = engine.generate_batch(GenerationRequest("a fox", seed=5, width=64, height=64, steps=1), keep_file=False)
    return result_event(batch, worker_ms=120.0)


@pytest.fixture(scope="module")
def made_three(engine):
    """A real batch of three (seeds 2**32 - 2, 2**32 - 1, 0) from the tiny engine, as a worker would send it."""
    from klein.generation.workers_replica import result_event

    request = GenerationRequest("a fox", seed=2**32 - 2, width=64, height=64, steps=1, num_images=3)
    return result_event(engine.generate_batch(request, keep_file=False), worker_ms=300.0)


def front(streams: list[StubStream], tmp_path: Path, replicas: int = 2):
    from klein.generation.tiny import build_tokenizer
    from klein.generation.workers import WorkerEngine

    description = {"spec": MODELS["tiny"], "device": "cpu",
                   "dtype": "float32", "reason": "test", "tokenizer": build_tokenizer(), "prompt_token_limit": 400}
    return WorkerEngine(StubHandle(streams), Settings(model="tiny", output_dir=tmp_path, queue_size=4),
                        description, replicas)


def died() -> BaseException:
    from ray.exceptions import ActorDiedError

    return ActorDiedError()


def test_a_worker_dying_mid_generation_is_retried_once_with_the_same_seed(made, tmp_path):
    started = {"event": "started", "worker": "worker-0@a", "pid": 1}
    dying = StubStream([started, {"event": "progress", "step": 1, "total": 4}], died())
    healthy = StubStream([{**started, "worker": "worker-1@b"}, made])
    engine = front([dying, healthy], tmp_path)
    result = engine.generate(GenerationRequest("a fox", width=64, height=64, steps=1))
    first, second = engine._stream.payloads
    assert first == second and first["fields"]["seed"] is not None  # chosen once, at the front
    assert result.worker == "worker-1@b" and result.path.read_bytes() == result.data
    assert Image.open(result.path).size == (64, 64)


def test_a_second_death_is_a_clear_error_naming_the_workers(tmp_path):
    started = {"event": "started", "worker": "worker-0@a", "pid": 1}
    streams = [StubStream([started], died()), StubStream([{**started, "worker": "worker-1@b"}], died())]
    with pytest.raises(GenerationError, match=r"stopped before it finished, twice \(worker-0@a, then worker-1@b"):
        front(streams, tmp_path).generate(GenerationRequest("a fox", width=64, height=64))


def test_a_full_deployment_queue_is_queue_full_with_a_retry_after(tmp_path):
    from ray.serve.exceptions import BackPressureError

    engine = front([StubStream([], BackPressureError(num_queued_requests=4, max_queued_requests=4))], tmp_path)
    with pytest.raises(QueueFull, match="All 2 workers are busy and 4 requests are waiting") as refused:
        engine.generate(GenerationRequest("a fox", width=64, height=64))
    assert refused.value.retry_after == 15  # 5 s a generation (no measure yet) x (4 waiting + 2 running) / 2


def test_cancel_before_a_worker_starts_cancels_the_call(tmp_path):
    class Waiting(StubStream):
        def __iter__(self):
            gate.wait(5)
            return iter(())

    gate, cancel = threading.Event(), threading.Event()
    stream = Waiting([])
    cancel.set()
    with pytest.raises(Exception, match="Generation cancelled"):
        front([stream], tmp_path).generate(GenerationRequest("a fox", width=64, height=64), cancel=cancel)
    gate.set()
    assert stream.cancelled


def test_the_result_is_the_workers_bytes_with_the_fronts_stages(made, tmp_path):
    stream = StubStream([{"event": "started", "worker": "worker-0@a", "pid": 1}, made])
    result = front([stream], tmp_path).generate(GenerationRequest("a fox", width=64, height=64), keep_file=False)
    assert result.data == made["images"][0]["data"] and result.path is None
    assert list(result.timings_ms)[:2] == ["queue", "transfer"] and "total" in result.timings_ms
    assert Image.open(io.BytesIO(result.data)).size == (64, 64) and result.info()["worker"] == "worker-0@a"


# -- batches ---------------------------------------------------------------------------------------

def test_num_images_travels_with_the_request():
    from klein.generation.workers_replica import payload_for, request_from_payload

    sent = GenerationRequest("four foxes", seed=9, num_images=4)
    payload = pickle.loads(pickle.dumps(payload_for(sent, None)))
    assert payload["fields"]["num_images"] == 4
    assert request_from_payload(payload, Settings().limits).num_images == 4


def test_a_batch_event_is_plain_data_with_every_image_once(made_three):
    event = pickle.loads(pickle.dumps(made_three))
    assert [fields["seed"] for fields in event["images"]] == [2**32 - 2, 2**32 - 1, 0]
    assert all(isinstance(fields["data"], bytes) and set(fields) & {"image", "path", "timings_ms"} == set()
               for fields in event["images"])
    assert event["moderated"] == [] and {"denoise", "vae_decode", "total"} <= set(event["timings_ms"])


def test_a_batch_comes_back_whole_with_a_file_per_image(made_three, tmp_path):
    stream = StubStream([{"event": "started", "worker": "worker-0@a", "pid": 1},
                         {"event": "progress", "step": 1, "total": 1}, made_three])
    engine, seen = front([stream], tmp_path), []
    batch = engine.generate_batch(GenerationRequest("a fox", seed=2**32 - 2, width=64, height=64, num_images=3),
                                  lambda step, total: seen.append((step, total)))
    assert engine._stream.payloads[0]["fields"]["num_images"] == 3 and seen == [(1, 1)]
    assert batch.seeds == [2**32 - 2, 2**32 - 1, 0] and batch.moderated == []
    for result, fields in zip(batch.results, made_three["images"]):
        assert result.data == fields["data"] and result.path.read_bytes() == fields["data"]
        assert result.path.name.startswith(f"klein-{fields['seed']}-") and result.worker == "worker-0@a"
        assert Image.open(result.path).size == (64, 64)
    assert len({id(r.timings_ms) for r in batch.results}) == 1  # one dict, as the engine's batch
    assert list(batch.results[0].timings_ms)[:2] == ["queue", "transfer"] and "total" in batch.results[0].timings_ms


def test_moderated_seeds_come_back_beside_the_kept_images(made_three, tmp_path):
    event = {**made_three, "images": made_three["images"][::2], "moderated": [2**32 - 1]}
    stream = StubStream([{"event": "started", "worker": "worker-0@a", "pid": 1}, event])
    batch = front([stream], tmp_path).generate_batch(
        GenerationRequest("a fox", seed=2**32 - 2, width=64, height=64, num_images=3), keep_file=False)
    assert batch.seeds == [2**32 - 2, 0] and batch.info() == {"seeds": [2**32 - 2, 0], "moderated_seeds": [2**32 - 1]}
    assert all(result.path is None for result in batch.results)


def test_generate_is_the_one_image_call(made, tmp_path):
    engine = front([StubStream([{"event": "started", "worker": "worker-0@a", "pid": 1}, made])], tmp_path)
    with pytest.raises(ValueError, match="use generate_batch\\(\\) for num_images=2"):
        engine.generate(GenerationRequest("a fox", width=64, height=64, num_images=2))
    assert engine._stream.payloads == []  # refused before anything was sent
    assert engine.generate(GenerationRequest("a fox", width=64, height=64), keep_file=False).seed == 5


def test_a_batch_lost_twice_names_its_images(tmp_path):
    started = {"event": "started", "worker": "worker-0@a", "pid": 1}
    streams = [StubStream([started], died()), StubStream([{**started, "worker": "worker-1@b"}], died())]
    engine = front(streams, tmp_path)
    with pytest.raises(GenerationError, match=r"^The workers generating these 2 images stopped before they finished, twice"):
        engine.generate_batch(GenerationRequest("a fox", width=64, height=64, num_images=2))
    first, second = engine._stream.payloads
    assert first == second and first["fields"]["num_images"] == 2  # the retry asks for the same batch, same seed
