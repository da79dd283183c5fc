"""Klein Studio: parse flags, build the engine, build the UI, launch.

    python app.py                 # auto: flux2-klein-4b on a GPU, the tiny model otherwise
    python app.py --model tiny    # the tiny random-weight model (no download)
    python app.py --share         # also create a Gradio share link (UI and REST API both)

The REST API (docs/rest.md) is served by Gradio's own FastAPI app, on the same port as the UI:
its routes go in through launch(app_kwargs=...), so a share link carries them too.
"""

from __future__ import annotations

import logging
import signal
import sys

from klein.config import RestSettings, Settings
from klein.errors import ModelLoadError

log = logging.getLogger("klein")


def create_app(settings: Settings):
    """Build the engine (loading the model once) and the Gradio Blocks over it, with its queue."""
    from klein.generation.engine import Engine
    from klein.ui.app import build_demo

    engine = Engine.from_settings(settings)
    demo = build_demo(engine)
    # One lane: every generating event shares one concurrency_id, so one generation runs at a time.
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return engine, demo


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
    return 0


def stop_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd, Spaces) stops the app as Ctrl+C does: Gradio closes the server on
    KeyboardInterrupt, and its shutdown stops the task worker gracefully."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    sys.exit(main())
