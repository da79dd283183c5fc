"""The benchmark harnesses run (their figures go to docs/BENCHMARKS.md, not into assertions)."""

import subprocess
import sys

from tests.conftest import ROOT


def run_module(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_gpu_harness_checks_the_4b_architecture_and_runs_on_the_cpu():
    out = run_module("bench.gpu", "--smoke", "--runs", "1")
    assert "3.876 B parameters" in out
    rows = [line for line in out.splitlines() if line.startswith("| eager") or line.startswith("| fused")]
    assert len(rows) == 4  # two variants, each with a prompt-cache miss and hit


def test_stage_benchmark_prints_a_row_per_size_and_format():
    out = run_module("bench.stages", "--runs", "1", "--sizes", "256", "--formats", "jpeg,png")
    assert "| 256x256 | jpeg |" in out and "| 256x256 | png |" in out
