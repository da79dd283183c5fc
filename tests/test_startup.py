"""Start-up errors are one line that names the flag to change, and come before the model loads."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from conftest import ROOT


def start(*flags: str, timeout: float = 120) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "app.py"), "--model", "tiny", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "could not start" in line or "Traceback" in line]


def test_a_port_in_use_is_refused_before_the_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output, _seconds = start("--port", str(port))
    assert code == 2
    assert "loading model" not in output and "Traceback" not in output
    [line] = error_lines(output)
    assert f"--port {port}: port {port} on 127.0.0.1 is in use" in line and f"--port {port + 1}" in line
    assert "server_port" not in output and "launch()" not in output


def test_a_host_that_is_not_this_machine_names_host():
    code, output, _ = start("--host", "192.0.2.1", "--port", "7999")  # TEST-NET-1: never local
    [line] = error_lines(output)
    assert code == 2 and "--host 192.0.2.1: cannot listen there" in line and "loading model" not in output


def test_a_missing_cuda_device_names_device_not_the_tiny_model():
    code, output, _ = start("--device", "cuda", "--port", "0")
    [line] = error_lines(output)
    assert code == 2 and "--device cuda:" in line and "leave --device out" in line
    assert "--model tiny" not in line  # tiny was already chosen: that advice would point the wrong way


def test_the_banner_names_the_share_flag(app_url, app_log_path):
    text = app_log_path.read_text()
    deadline = time.monotonic() + 10
    while "public link" not in text and time.monotonic() < deadline:
        time.sleep(0.2)
        text = app_log_path.read_text()
    assert "* To create a public link, run with --share" in text
    assert "share=True" not in text and "launch()" not in text
    assert f"* Running on local URL:  {app_url.rstrip('/')}" in text


def test_ipv6_hosts_are_probed_as_ipv6():
    import pytest

    from app import check_port

    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6 stack")  # the IPv4 paths above still run
    check_port("::1", 0)  # port 0: nothing to check
    with socket.socket(socket.AF_INET6) as taken:
        try:
            taken.bind(("::1", 0))
        except OSError:
            pytest.skip("::1 is not configured here")
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"^--port {port}: port {port} on ::1 is in use"):
            check_port("::1", port)
