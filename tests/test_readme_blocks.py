"""Every code block of the README, run as written from the repository root (issue 12, finding 2).

Shell lines that start the app are run as written (the test picks the port through GRADIO_SERVER_PORT,
which the README's options table documents), except those that need several GPUs or a Ray cluster;
each must use the python of the README's install (.venv), since a bare `python app.py` fails after
it. Python blocks then run against the app they are written for, with only the address filled in.
The curl lines are run by test_readme_curl.py; lines that set up a machine (make a venv, install
packages, run CI) are not run, and are listed here so a new block must be placed in one of these kinds.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from test_readme_curl import readme_examples

from tests.conftest import ROOT, free_port, wait_for_server

README_URL = "http://127.0.0.1:7860"
SETUP = {"python3 -m venv .venv", ".venv/bin/pip install -r requirements.txt", "bash .ci/run"}
NEEDS_HARDWARE = ("--workers", "--ray-address")  # several GPUs, a Ray cluster: not on a 2-core test machine
# What a block's `Client(...)` call needs of the server, by the key it sends.
KEYS = {"Bearer key1": "key1,key2"}
# Checked after each python block, on the names the README's example leaves behind.
RESULT_CHECK = """
from PIL import Image as _Image
assert _Image.open(image).size == (info["width"], info["height"]), (image, info)
assert info["seed"] == seed and isinstance(seed, int), (seed, info)
print("checked", seed, info["width"], info["height"], info["workflow"])
"""


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", ROOT.joinpath("README.md").read_text(), re.S)


def shell_commands() -> list[str]:
    """Each command of the README's bash blocks (continuation lines joined, `&&` chains split, comments cut)."""
    lines = [line.split(" #")[0].strip() for block in blocks("bash")
             for line in block.replace("\\\n", " ").splitlines()]
    return [part.strip() for line in lines if line and not line.startswith("#") for part in line.split("&&")]


def starts_the_app(command: str) -> bool:
    return re.search(r"\bapp\.py\b", command) is not None


def runs_here(command: str) -> bool:
    return starts_the_app(command) and not any(flag in command for flag in NEEDS_HARDWARE)


def test_every_shell_command_is_of_a_kind_this_suite_runs_or_names():
    commands = shell_commands()
    curl = {command for command, _ in readme_examples()}
    unknown = [c for c in commands if c not in SETUP and not starts_the_app(c) and not c.startswith("curl ")]
    assert not unknown, unknown
    readme_curl = [c for c in commands if c.startswith("curl ")]
    assert readme_curl and all(c in curl for c in readme_curl)  # run as written by test_readme_curl.py
    assert sum(runs_here(c) for c in commands) >= 2  # the install's start and the REST section's


def test_every_app_start_uses_the_python_of_the_install():
    """The install makes .venv; `python app.py` after it finds none of the packages (issue 12, finding 2)."""
    wrong = [c for c in shell_commands() if starts_the_app(c)
             and not re.match(r"^(\w+=\S+ )*\.venv/bin/python app\.py\b", c)]
    assert not wrong, wrong


@pytest.fixture
def started(cache_dir, tmp_path):
    """start(command, env) runs a README command that starts the app, as written, and returns its URL."""
    processes = []

    def start(command: str, extra_env: dict | None = None) -> str:
        port = free_port()
        env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "KLEIN_CACHE_DIR": str(cache_dir),
               "KLEIN_OUTPUT_DIR": str(tmp_path / "out"), "KLEIN_TASKS_DB": str(tmp_path / "tasks.db"),
               **(extra_env or {})}
        log = open(tmp_path / f"app-{port}.log", "w")
        process = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append((process, log))
        try:
            wait_for_server(f"http://127.0.0.1:{port}/", process)
        except Exception:
            log.flush()
            raise AssertionError((command, (tmp_path / f"app-{port}.log").read_text()[-3000:])) from None
        return f"http://127.0.0.1:{port}"

    yield start
    for process, log in processes:
        os.killpg(process.pid, signal.SIGTERM)  # bash and the app it started: this test's own group
        process.wait(30)
        log.close()


def run_python(block: str, url: str) -> str:
    code = block.replace(README_URL, url) + RESULT_CHECK
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (block, done.stderr[-3000:])
    return done.stdout


def test_the_app_starts_as_each_shell_line_says(started):
    for command in (c for c in shell_commands() if runs_here(c)):
        assert started(command).startswith("http://127.0.0.1:")


def test_every_python_block_runs_against_the_app_it_is_written_for(started):
    python_blocks = blocks("python")
    assert len(python_blocks) >= 2
    install_start = next(c for c in shell_commands() if runs_here(c))
    plain_url = None
    for block in python_blocks:
        key = next((k for k in KEYS if k in block), None)
        if key:
            url = started(install_start, {"KLEIN_API_KEYS": KEYS[key]})
        else:
            plain_url = plain_url or started(install_start)
            url = plain_url
        output = run_python(block, url)
        assert output.count("checked ") == 1, output
