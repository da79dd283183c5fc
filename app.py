"""Klein Studio: parse flags, build the engine, build the UI, launch.

    python app.py                 # auto: flux2-klein-4b on a GPU, the tiny model otherwise
    python app.py --model tiny    # the tiny random-weight model (no download)
    python app.py --share         # also create a Gradio share link
"""

from __future__ import annotations

import logging
import sys

from klein.config import Settings
from klein.errors import ModelLoadError

log = logging.getLogger("klein")


def create_app(settings: Settings):
    """Build the engine (loading the model once) and the Gradio Blocks over it, with its queue."""
    from klein.engine import Engine
    from klein.ui import build_demo

    engine = Engine.from_settings(settings)
    demo = build_demo(engine)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency_limit)
    return engine, demo


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_args(argv)
    try:
        engine, demo = create_app(settings)
    except ModelLoadError as exc:
        log.error("Klein Studio could not start: %s", exc)
        return 2
    from klein.ui import launch

    launch(demo, engine, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
