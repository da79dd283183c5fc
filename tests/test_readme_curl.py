"""The curl examples of the README's REST section and of docs/rest.md, run as written against
`KLEIN_API_KEYS=dev-key python app.py --model tiny`.

Only the address (the test's free port) and TASK_ID (the task the example before it created) are
filled in; each command runs in bash, from a folder where assets/ is the repository's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import ROOT, free_port, wait_for_server
from PIL import Image

README_URL = "http://127.0.0.1:7860"
# What each -o file must be: the README promises these formats (and a size where it sets one).
EXPECTED_FILES = {"lighthouse.png": ("PNG", (512, 512)), "combined.jpg": ("JPEG", None), "result.jpg": ("JPEG", None),
                  "balloon.png": ("PNG", (768, 512))}


def readme_examples() -> list[tuple[str, str | None]]:
    """(command, the `# ...` comment under it or None) for each curl line of the README's REST section,
    then of docs/rest.md."""
    section = ROOT.joinpath("README.md").read_text().split("## REST API", 1)[1].split("\n## ", 1)[0]
    section += ROOT.joinpath("docs", "rest.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    examples = []
    for index, line in enumerate(lines):
        if line.startswith("curl "):
            after = lines[index + 1] if index + 1 < len(lines) else ""
            examples.append((line, after[2:] if after.startswith("# ") else None))
    return examples


@pytest.fixture(scope="module")
def app(cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme-curl")
    port = free_port()
    env = {**os.environ, "KLEIN_API_KEYS": "dev-key", "KLEIN_CACHE_DIR": str(cache_dir),
           "KLEIN_OUTPUT_DIR": str(folder / "out"), "KLEIN_TASKS_DB": str(folder / "tasks.db")}
    log = open(folder / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", process)
        (folder / "work").mkdir()
        (folder / "work" / "assets").symlink_to(ROOT / "assets")
        yield f"http://127.0.0.1:{port}", folder / "work"
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def run(command: str, cwd) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


def check_against_comment(output: str, comment: str) -> None:
    """A comment that is JSON is the exact answer; an abbreviated one names keys and statuses that must appear."""
    try:
        assert json.loads(output) == json.loads(comment)
        return
    except json.JSONDecodeError:
        pass
    for key in re.findall(r'"(\w+)":', comment):
        assert f'"{key}":' in output, (key, output[:300])
    for status in re.findall(r'"([A-Z_]{4,})"', comment):
        assert f'"{status}"' in output, (status, output[:300])


def test_the_readme_has_the_examples_this_test_runs():
    commands = [command for command, _ in readme_examples()]
    assert len(commands) == 12 and all(README_URL in command for command in commands)


def test_every_curl_example_works_as_written(app):
    url, cwd = app
    task_id = None
    for command, comment in readme_examples():
        command = command.replace(README_URL, url)
        if "TASK_ID" in command:
            assert task_id, "an example uses TASK_ID before one was created"
            command = command.replace("TASK_ID", task_id)
        output = run(command, cwd)
        if command.rstrip().endswith("-H 'x-freepik-api-key: dev-key'") and "/flux-2-klein/" in command:
            output = wait_until_done(command, cwd, output)  # the README shows the task once it has finished
        if comment:
            check_against_comment(output, comment)
        if '"task_id"' in output and task_id is None:
            task_id = json.loads(output)["data"]["task_id"]
        for name, (image_format, size) in EXPECTED_FILES.items():
            if f"-o {name}" in command:
                image = Image.open(cwd / name)
                assert image.format == image_format and (size is None or image.size == size), (name, image)
    assert all((cwd / name).is_file() for name in EXPECTED_FILES)


def wait_until_done(command: str, cwd, output: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while '"COMPLETED"' not in output and '"FAILED"' not in output:
        assert time.monotonic() < deadline, output
        time.sleep(0.2)
        output = run(command, cwd)
    assert '"COMPLETED"' in output, output
    return output
