"""What a person waits for in a real browser (Debian's chromium, headless), with the tiny model:
page load until the prompt box is ready, and Generate until the 1024x1024 result is shown.

    python -m bench.browser [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from bench.app import App, table  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    app = App(tempfile.mkdtemp(prefix="klein-bench-cache-"))
    app.wait_ready()
    loads, rounds = [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                                 headless=True, args=CHROMIUM_ARGS)
            for _ in range(args.runs):
                page = browser.new_page()
                t0 = time.perf_counter()
                page.goto(app.url, wait_until="load")
                page.wait_for_selector("#text_to_image-prompt textarea")
                loads.append((time.perf_counter() - t0) * 1000)
                page.fill("#text_to_image-prompt textarea", "a lighthouse at dusk")
                t0 = time.perf_counter()
                page.click("#text_to_image-generate")
                page.wait_for_function("() => document.querySelector('#text_to_image-info').innerText.includes('×')"
                                       " && document.querySelector('#text_to_image-result img')?.complete",
                                       timeout=60_000)
                rounds.append((time.perf_counter() - t0) * 1000)
                page.close()
            browser.close()
    finally:
        app.stop()
    print(f"### In chromium (headless), median of {args.runs}\n")
    table(["page load to ready prompt ms", "Generate to 1024x1024 result shown ms"],
          [[statistics.median(loads), statistics.median(rounds)]])


if __name__ == "__main__":
    main()
