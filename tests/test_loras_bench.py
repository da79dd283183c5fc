"""The LoRA benchmark runs and prints its table (the figures go to docs/BENCHMARKS.md, not assertions)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_lora_benchmark_prints_a_row_per_case():
    result = subprocess.run([sys.executable, "-m", "bench.loras", "--runs", "1", "--size", "64"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| no LoRA", "| first use of an adapter (load)", "| switch between two loaded adapters",
        "| two stacked, loaded", "| no LoRA after LoRAs (disabled)"]
    assert "2 loads" in result.stdout  # two adapters, each loaded once: switching did not reload
