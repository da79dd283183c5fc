"""Klein Studio: parse flags, build the engine, build the UI, launch.

    python app.py                 # auto: flux2-klein-4b on a GPU, the tiny model otherwise
    python app.py --model tiny    # the tiny random-weight model (no download)
    python app.py --share         # also create a Gradio share link (UI and REST API both)

The REST API (docs/rest.md) is served by Gradio's own FastAPI app, on the same port as the UI:
its routes go in through launch(app_kwargs=...), so a share link carries them too.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys

from klein.config import RestSettings, Settings
from klein.errors import ModelLoadError

log = logging.getLogger("klein")


def create_app(settings: Settings):
    """Build the engine (loading the model once, or starting the workers that do) and the Gradio Blocks
    over it, with its queue."""
    from klein.ui.app import build_demo

    engine, lanes = create_engine(settings)
    demo = build_demo(engine)
    # One lane per worker (one in one process): every generating event shares one concurrency_id, so at
    # most `lanes` generations run at once; the others wait in Gradio's queue, which shows their position.
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=lanes)
    return engine, demo


def create_engine(settings: Settings):
    """The engine and how many generations it runs at once: in this process, or with --workers or
    --ray-address a front over Ray Serve workers (docs/workers.md). Ray is imported only then."""
    if settings.workers or settings.ray_address:
        from klein.generation.workers import WorkerEngine

        engine = WorkerEngine.start(settings)
        return engine, engine.replicas
    from klein.generation.engine import Engine

    return Engine.from_settings(settings), 1


def create_rest(engine, rest_settings: RestSettings):
    """The REST API over the same engine (one GPU lane shared with the UI)."""
    from klein.rest.api import RestApi

    rest = RestApi(engine, rest_settings)
    if not rest.keys:
        log.warning("REST API: no API keys configured, so /v1/* answers 401; set KLEIN_API_KEYS to use it")
    return rest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_args(argv)
        rest_settings = RestSettings.from_env(settings.cache_dir)
        check_port(settings.host, settings.port)  # before the model loads, not after
        engine, demo = create_app(settings)
    except (ModelLoadError, ValueError) as exc:
        log.error("Klein Studio could not start: %s", exc)
        return 2
    from klein.ui.app import launch

    rest = create_rest(engine, rest_settings)
    log.info("REST API docs at http://%s:%s/docs", settings.host, settings.port)
    stop_on_sigterm()
    try:
        launch(demo, engine, settings, keys=rest.keys, app_kwargs=rest.app_kwargs(gate=not settings.public_page))
    finally:
        # Gradio gives the server 5 s to stop; the running task's grace period and the webhook flush
        # are ours to wait for, so an ordinary restart neither fails a task nor loses a delivery.
        log.info("shutting down: finishing or handing back the running task, flushing webhooks")
        rest.tasks.stop(rest.shutdown_grace)
        rest.webhooks.stop()
        if hasattr(engine, "close"):  # the workers (and a local Ray instance) go with the front
            engine.close()
    return 0


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken, or a --host that is not this machine's, in one line naming the flag."""
    if port == 0:
        return
    try:
        family, _type, _proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ValueError(f"--host {host}: not an address or a name this machine can resolve ({exc.strerror})") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:  # IPv6 hosts such as :: too
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(f"--port {port}: port {port} on {host} is in use (another Klein Studio?); "
                                 f"pass a free one, e.g. --port {port + 1}") from None
            raise ValueError(f"--host {host}: cannot listen there ({exc.strerror}); use 127.0.0.1, "
                             "or 0.0.0.0 to serve your network") from None


def stop_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd, Spaces) stops the app as Ctrl+C does: Gradio closes the server on
    KeyboardInterrupt, and its shutdown stops the task worker gracefully."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
