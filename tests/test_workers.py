"""Workers on Ray Serve (docs/workers.md): one local Ray instance for the module, two tiny-model CPU
replicas (num_gpus=0, one torch thread each), and the front's WorkerEngine over them: spreading,
pixels, a batch (num_images), progress, Cancel reaching the worker, backpressure (QueueFull, REST 503),
a task, the page, and a worker killed mid-generation. The kill test runs last: it leaves one replica
restarting."""

from __future__ import annotations

import io
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_rest import AUTH, SMALL, TASKS, make_client, rest_settings, wait_for_status
from PIL import Image

from klein.config import Settings
from klein.errors import GenerationCancelled, InvalidRequest, QueueFull, RequestModerated
from klein.request import GenerationRequest

QUEUE = 2  # requests that may wait for a worker beyond the two running ones


@pytest.fixture(scope="module")
def workers(cache_dir, tiny_model, tmp_path_factory):
    """The front's engine over two CPU workers; Ray and every process it started are gone afterwards."""
    from klein.generation.workers import WorkerEngine

    # Ray's socket paths must stay under 108 bytes: a short folder of our own, not pytest's.
    temp = tempfile.mkdtemp(prefix="kray-", dir="/tmp")
    settings = Settings(model="tiny", cache_dir=cache_dir, output_dir=tmp_path_factory.mktemp("worker-out"),
                        workers=2, queue_size=QUEUE)
    engine = None
    try:
        engine = WorkerEngine.start(settings, threads=1, temp_dir=temp)
        yield engine
    finally:
        if engine is not None:
            engine.close()
        leftovers = _processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not leftovers, f"Ray processes still running after close: {leftovers}"


def _processes_mentioning(text: str, wait: float = 10.0) -> list[str]:
    """Command lines of live processes that mention `text` (Ray's own carry its temp folder)."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and int(proc.name) != os.getpid():
                found.append(f"{proc.name}: {cmdline[:120]}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def request(seed: int, side: int = 256, **fields) -> GenerationRequest:
    return GenerationRequest(prompt=fields.pop("prompt", "a lighthouse"), seed=seed, width=side, height=side,
                             output_format=fields.pop("output_format", "png"), **fields)


def concurrently(engine, requests: list[GenerationRequest]) -> list:
    """Run the requests at once, each in its own thread as Gradio and REST do; results or errors, in order."""
    out: list = [None] * len(requests)

    def run(index: int) -> None:
        try:
            out[index] = engine.generate(requests[index], keep_file=False)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return out


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_requests_spread_over_both_workers_with_the_pixels_of_one_process(workers, engine):
    results = [r for batch in ((1, 2), (3, 4)) for r in concurrently(workers, [request(s) for s in batch])]
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.worker for r in results}) == 2, [r.worker for r in results]
    assert all(r.info()["worker"].startswith("worker-") for r in results)
    local = engine.generate(request(3), keep_file=False)
    worker_made = next(r for r in results if r.seed == 3)
    decoded = Image.open(io.BytesIO(worker_made.data))
    assert decoded.size == (256, 256) and decoded.format == "PNG"
    # A worker runs one torch thread, this process several: float sums may round differently, no more.
    assert np.abs(pixels(decoded) - pixels(local.image)).max() <= 2
    assert not np.array_equal(pixels(decoded), pixels(Image.open(io.BytesIO(results[0].data))))


def test_a_batch_runs_on_one_worker_with_the_pixels_of_one_process(workers, engine):
    seen: list[tuple[int, int]] = []
    batch = workers.generate_batch(request(50, steps=3, num_images=2), lambda step, total: seen.append((step, total)))
    local = engine.generate_batch(request(50, steps=3, num_images=2), keep_file=False)
    assert batch.seeds == local.seeds == [50, 51] and batch.moderated == []
    assert seen == [(1, 3), (2, 3), (3, 3)]  # one pipeline call: the batch's steps, once
    assert len({result.worker for result in batch.results}) == 1 and batch.results[0].worker.startswith("worker-")
    assert {"queue", "transfer", "denoise", "total"} <= set(batch.results[1].timings_ms)
    for far, near in zip(batch.results, local.results):
        decoded = Image.open(far.path)
        assert far.path.read_bytes() == far.data and decoded.size == (256, 256) and decoded.format == "PNG"
        assert far.path.name.startswith(f"klein-{far.seed}-")
        assert np.abs(pixels(decoded) - pixels(near.image)).max() <= 1
    first, second = (pixels(result.image) for result in batch.results)
    assert not np.array_equal(first, second)


def test_timings_have_the_queue_and_transfer_stages_and_the_file_is_written(workers):
    result = workers.generate(request(7, side=128, output_format="jpeg"))
    stages = result.timings_ms
    assert {"queue", "transfer", "text_encode", "denoise", "vae_decode", "safety", "encode", "total"} <= set(stages)
    assert stages["total"] >= stages["queue"] + stages["denoise"]
    assert result.path.parent == workers.output_dir and Image.open(result.path).size == (128, 128)
    assert result.path.read_bytes() == result.data


def test_references_travel_as_bytes_and_the_workflow_follows_them(workers):
    red = Image.new("RGB", (320, 240), (200, 30, 30))
    result = workers.generate(GenerationRequest(prompt="make it blue", images=(red,), aspect_ratio="match_input",
                                                resolution="1k", seed=5, steps=1), keep_file=False)
    assert result.workflow.value == "edit"
    assert Image.open(io.BytesIO(result.data)).size == (result.width, result.height)
    assert result.width / result.height == pytest.approx(320 / 240, rel=0.05)


def test_progress_comes_by_steps_from_the_worker(workers):
    seen: list[tuple[int, int]] = []
    workers.generate(request(8, steps=5), lambda step, total: seen.append((step, total)), keep_file=False)
    assert seen == [(step, 5) for step in range(1, 6)]


def test_errors_from_the_worker_keep_their_type_and_field(workers):
    with pytest.raises(RequestModerated, match="^Request moderated: the prompt matched category sexual"):
        workers.generate(request(9, prompt="explicit porn scene"), keep_file=False)
    with pytest.raises(InvalidRequest, match="^prompt: is .* tokens long"):
        workers.check_request(request(9, prompt="lighthouse " * 900))


@pytest.mark.parametrize("num_images", [1, 2])
def test_cancel_reaches_the_worker_and_frees_it(workers, num_images):
    probe = workers.generate_batch(request(10, side=1024, steps=4, num_images=num_images), keep_file=False).results[0]
    step_ms = probe.timings_ms["denoise"] / 4  # on a worker, by the worker's clock (a step of the whole batch)
    cancel, steps = threading.Event(), []

    def progress(step: int, total: int) -> None:
        steps.append(step)
        if step == 3:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        workers.generate_batch(request(10, side=1024, steps=100, num_images=num_images), progress, cancel=cancel,
                               keep_file=False)
    assert steps[-1] < 100
    # Had the cancelled worker gone on, one of these would wait for its remaining steps.
    started = time.monotonic()
    results = concurrently(workers, [request(11, side=64, steps=1), request(12, side=64, steps=1)])
    elapsed_ms = (time.monotonic() - started) * 1000
    assert len({r.worker for r in results}) == 2
    assert elapsed_ms < 0.5 * step_ms * (100 - steps[-1]), (elapsed_ms, step_ms)


def test_a_full_queue_is_refused_at_once_with_retry_after_and_rest_says_503(workers, tmp_path):
    cancel, running = threading.Event(), threading.Semaphore(0)

    def long(seed: int) -> None:
        try:
            workers.generate(request(seed, side=512, steps=100), lambda s, t: s == 1 and running.release(),
                             cancel=cancel, keep_file=False)
        except GenerationCancelled:
            pass

    threads = [threading.Thread(target=long, args=(20 + i,)) for i in range(2 + QUEUE)]
    try:
        for index, thread in enumerate(threads):
            thread.start()
            if index < 2:
                assert running.acquire(timeout=60)  # both workers busy, then QUEUE requests waiting
        time.sleep(1.0)
        started = time.monotonic()
        with pytest.raises(QueueFull, match="All 2 workers are busy") as refused:
            workers.generate(request(30), keep_file=False)
        assert time.monotonic() - started < 5 and refused.value.retry_after >= 1
        api, client = make_client(workers, rest_settings(tmp_path))
        with client:
            answer = client.post("/v1/generate", json={"prompt": "a fox", **SMALL}, headers=AUTH)
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
        assert "workers are busy" in answer.json()["detail"]
    finally:
        cancel.set()  # running and queued ones alike
        for thread in threads:
            thread.join(60)


def test_a_task_completes_through_a_worker(workers, tmp_path):
    api, client = make_client(workers, rest_settings(tmp_path))
    with client:
        created = client.post(TASKS, json={"prompt": "a lighthouse", "seed": 3, **SMALL}, headers=AUTH).json()
        task = wait_for_status(client, created["data"]["task_id"])
        assert task["status"] == "COMPLETED", task
        image = Image.open(io.BytesIO(client.get(task["generated"][0], headers=AUTH).content))
    assert image.size == (128, 128) and {"queue", "transfer"} <= set(task["timings_ms"])


def test_the_page_runs_through_the_workers_one_lane_each(workers, monkeypatch):
    from gradio_client import Client

    import app
    from klein.generation.workers import WorkerEngine

    monkeypatch.setattr(WorkerEngine, "start", classmethod(lambda cls, settings: workers))
    engine, demo = app.create_app(Settings(model="tiny", workers=2))
    assert engine is workers and demo._queue.default_concurrency_limit == 2
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None,
                allowed_paths=[str(workers.output_dir)])
    try:
        client = Client(demo.local_url, verbose=False)
        # (first image, its seed, info[, the gallery of a batch])
        path, seed, info, *_ = client.predict(prompt="a fox", seed=42, randomize_seed=False, custom_size=True,
                                              width=128, height=128, api_name="/text_to_image")
        assert seed == 42 and Image.open(path).size == (128, 128) and "worker-" in str(info)
        assert "2 Ray Serve workers" in engine.model.device
    finally:
        demo.close()


def test_a_worker_killed_mid_generation_is_retried_on_the_other_and_the_front_goes_on(workers):
    killed = []

    def kill_at_step_3(step: int, total: int) -> None:
        if step == 3 and not killed:
            killed.append(workers.serving())
            os.kill(killed[0].pid, signal.SIGKILL)

    result = workers.generate(request(40, side=256, steps=30), kill_at_step_3, keep_file=False)
    assert killed and result.worker != killed[0].name
    assert Image.open(io.BytesIO(result.data)).size == (256, 256)
    for seed in (41, 42):
        assert workers.generate(request(seed, side=64, steps=1), keep_file=False).seed == seed
