"""Every benchmark, one after the other: `python -m bench` (the tables of docs/BENCHMARKS.md)."""

import platform
import subprocess
import sys

MODULES = ("bench.stages", "bench.safety", "bench.app", "bench.rest", "bench.soak", "bench.load", "bench.browser",
           "bench.memory", "bench.inpaint", "bench.gpu", "bench.workers",
           "bench.loras", "bench.batch")

if __name__ == "__main__":
    print(f"# Klein Studio benchmarks\n\nMachine: {platform.machine()}, {platform.python_version()}\n")
    for module in MODULES:
        print(f"## python -m {module}\n", flush=True)
        subprocess.run([sys.executable, "-m", module], check=True)
        print(flush=True)
