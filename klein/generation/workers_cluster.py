"""Ray and Ray Serve for the workers: start a local Ray instance or join a cluster, deploy one replica
per GPU, and take it all down again. Imported only when --workers or --ray-address is given, and the
one place that imports Ray for the front (workers.py takes Ray's error types from here)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

# Read by Ray Serve when it is imported, so set first. While every worker is busy, a waiting request asks
# again after a backoff that grows to 0.5 s by default: a worker could sit idle that long between two
# images. 50 ms costs at most 2 x workers queue-length probes per 50 ms.
os.environ.setdefault("RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S", "0.05")

import ray  # noqa: E402
from ray import exceptions as ray_errors  # noqa: E402, F401 - for workers.py
from ray import serve  # noqa: E402
from ray.serve.exceptions import BackPressureError, RequestCancelledError  # noqa: E402, F401 - for workers.py

from ..config import Settings
from ..errors import ModelLoadError
from .pipeline import first_line
from .workers_replica import KleinWorker

log = logging.getLogger(__name__)

APP = "klein"  # the Serve application's name, as `serve status` and the dashboard show it
KLEIN_PACKAGE = Path(__file__).resolve().parents[1]
CONSTRUCTOR_RETRIES = 1  # a replica that cannot load the model fails the start, not twenty times


@dataclass(frozen=True)
class Cluster:
    """Where the workers run: how many replicas, GPUs each, and whether this process started Ray."""

    replicas: int
    gpus_per_replica: float
    started_here: bool
    address: str


def connect(settings: Settings, temp_dir: str | None = None) -> Cluster:
    """--workers N: a local Ray instance with N replicas (one GPU each if this machine has GPUs, else N CPU
    replicas). --ray-address A: join that cluster; one replica per GPU in it unless --workers says how many.
    Raises ValueError naming the flag when the numbers cannot work."""
    if settings.workers < 0:
        raise ValueError(f"--workers: {settings.workers} is not a number of workers (0 or more)")
    # The front's own klein package travels to the replicas: every machine runs the front's code, and
    # needs only the packages of requirements.txt.
    code = {"py_modules": [str(KLEIN_PACKAGE)]}
    if settings.ray_address:
        try:
            ray.init(address=settings.ray_address, namespace=APP, runtime_env=code)
        except Exception as exc:
            raise ValueError(f"--ray-address: cannot join the Ray cluster at {settings.ray_address} "
                             f"({first_line(exc)}); is `ray start --head` running there?") from exc
    else:
        cores = os.cpu_count() or 1
        ray.init(num_cpus=max(cores, settings.workers), include_dashboard=False, namespace=APP,
                 runtime_env=code, _temp_dir=temp_dir)
    try:
        return _plan(settings)
    except Exception:
        ray.shutdown()
        raise


def _plan(settings: Settings) -> Cluster:
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    where = f"the Ray cluster at {settings.ray_address}" if settings.ray_address else "this machine"
    replicas = settings.workers or gpus
    if replicas == 0:
        raise ValueError(f"--ray-address: {where} has no GPU; add --workers N to run N CPU workers")
    if gpus and replicas > gpus:
        flag = "--workers" if settings.workers else "--ray-address"
        raise ValueError(f"{flag}: {replicas} workers asked for, and {where} has {gpus} GPUs (one worker per GPU)")
    if not gpus and replicas > cpus:
        raise ValueError(f"--workers: {replicas} CPU workers asked for, and {where} has {cpus} CPUs")
    return Cluster(replicas, 1 if gpus else 0, not settings.ray_address, settings.ray_address or "local")


def deploy(settings: Settings, cluster: Cluster, threads: int | None = None, app: str = APP):
    """Start the replicas (each loads and warms up the model) and return the deployment's handle.

    One request at a time per replica (max_ongoing_requests=1); at most --queue-size more wait at the
    front, beyond that a call raises BackPressureError. Raises ModelLoadError when a replica cannot start.
    """
    if threads is None and not cluster.gpus_per_replica:
        threads = max(1, (os.cpu_count() or 1) // cluster.replicas)  # CPU replicas share this machine's cores
    deployment = serve.deployment(KleinWorker).options(
        name="KleinWorker",
        num_replicas=cluster.replicas,
        max_ongoing_requests=1,
        max_queued_requests=settings.queue_size,
        ray_actor_options={"num_cpus": 1, "num_gpus": cluster.gpus_per_replica},
        max_constructor_retry_count=CONSTRUCTOR_RETRIES,
        graceful_shutdown_timeout_s=5,
    )
    serve.start(proxy_location="Disabled")  # the front is the only way in: no Serve HTTP proxy
    try:
        return serve.run(deployment.bind(for_workers(settings), threads), name=app, route_prefix=None)
    except Exception as exc:
        raise ModelLoadError(f"The workers could not start: {_reason(exc, app)}") from exc


def for_workers(settings: Settings) -> Settings:
    """The settings the replicas get: relative paths made absolute (a worker's working folder is not the
    front's), a --model folder included. On other machines those paths must exist there too."""
    paths = {f.name: getattr(settings, f.name).resolve() for f in dataclasses.fields(settings)
             if isinstance(getattr(settings, f.name), Path)}
    model = Path(settings.model).expanduser()
    if model.is_dir():
        paths["model"] = str(model.resolve())
    return dataclasses.replace(settings, **paths)


def shutdown(cluster: Cluster) -> None:
    """Remove the application; stop Serve and Ray too when this process started them. Serve goes first:
    its router thread in this process must stop calling into Ray before Ray's core is torn down."""
    try:
        if cluster.started_here:
            serve.shutdown()
        else:
            serve.delete(APP)
    finally:
        ray.shutdown()


def _reason(exc: BaseException, app: str) -> str:
    """Why the deployment failed, in one line: the replica's own error (a ModelLoadError's message) when
    Serve has it, else Serve's."""
    try:
        message = serve.status().applications[app].deployments["KleinWorker"].message
    except Exception:  # noqa: BLE001 - the status is a nicety; the exception's text is enough
        message = ""
    lines = [line.strip() for line in f"{message}\n{exc}".splitlines() if line.strip()]
    for line in lines:
        if "ModelLoadError:" in line:
            return line.split("ModelLoadError:", 1)[1].strip()
    return (lines[-1] if lines else type(exc).__name__)[:400]
