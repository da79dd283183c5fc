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


def test_batch_benchmark_prints_both_paths_for_every_size_and_count():
    out = run_module("bench.batch", "--runs", "1", "--sizes", "64", "--counts", "1,2,4")
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("| size |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[:6] == ["size", "n", "one call img/s", "n sequential img/s", "one call vs sequential",
                           "same, CPU time"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| 64x64 |")]
    assert [row[1] for row in rows] == ["1", "2", "4"] and all(len(row) == len(columns) for row in rows)
    assert all(float(cell.rstrip("x")) > 0 for row in rows for cell in row[2:])
    verdict = next(line for line in lines if line.startswith("n=4 at 64x64: one call makes "))
    assert any(f": {answer} per image (noise band" in verdict for answer in ("faster", "slower", "no difference"))
