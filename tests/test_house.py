"""The rules of the house (DESIGN.md, docs/ARCHITECTURE.md), checked on the source: wings, import
direction, no circles, heavy libraries only in their wing, short files, no dangling doc references."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KLEIN = ROOT / "klein"
# Higher layers may import lower ones (and their own wing), never the other way.
LAYERS = {"ui": 3, "rest": 3, "generation": 2, "safety": 1, "output": 1, "": 0}
# Third-party packages only one wing may import.
OWNED = {"gradio": "ui", "fastapi": "rest", "starlette": "rest", "torch": "generation", "diffusers": "generation",
         "transformers": "generation", "spaces": "generation", "ray": "generation"}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module under klein/."""
    found = {}
    for path in KLEIN.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else ""


def imports(module: str, path: Path) -> set[str]:
    """Every module name `path` imports, relative imports resolved, anywhere in the file."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def klein_imports() -> dict[str, set[str]]:
    known = modules()
    return {name: {i for i in imports(name, path) if i in known and i != name} for name, path in known.items()}


def test_the_tree_shows_the_wings():
    for folder in ("generation", "safety", "output", "ui", "rest"):
        assert (KLEIN / folder / "__init__.py").is_file(), folder
    top = {p.name for p in KLEIN.glob("*.py")}
    assert top == {"__init__.py", "config.py", "errors.py", "presets.py", "request.py", "images.py"}


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in klein_imports().items():
        for target in targets:
            here, there = wing(module), wing(target)
            if here != there and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_circles():
    graph = klein_imports()
    # Package __init__ files are empty: an edge to a package is not an edge to its modules.
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_heavy_libraries_only_in_their_wing():
    wrong = []
    for module, path in modules().items():
        for name in imports(module, path):
            owner = OWNED.get(name.split(".")[0])
            if owner is not None and wing(module) != owner:
                wrong.append(f"{module} imports {name}")
    assert not wrong, wrong


def test_ray_only_in_the_workers_modules_and_those_only_when_asked_for():
    """Without --workers or --ray-address nothing imports Ray: only klein/generation/workers*.py import it,
    no other klein module imports them, and app.py imports them inside a function, not at its top."""
    wrong = []
    for module, path in modules().items():
        if module.startswith("klein.generation.workers"):
            continue
        wrong += [f"{module} imports {name}" for name in imports(module, path)
                  if name.split(".")[0] == "ray" or name.startswith("klein.generation.workers")]
    app = ast.parse((ROOT / "app.py").read_text())
    top = [node for node in app.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top for alias in node.names] + [getattr(node, "module", "") or "" for node in top]
    wrong += [f"app.py imports {name} at its top" for name in names if "workers" in name or name.startswith("ray")]
    assert not wrong, wrong


def test_no_file_over_the_limit():
    files = [*KLEIN.rglob("*.py"), ROOT / "app.py", *ROOT.glob("bench/*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_docs_cited_anywhere_exist_and_nothing_points_outside_the_repository():
    texts = [*KLEIN.rglob("*.py"), ROOT / "app.py", ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.py")]
    cited, outside = set(), []
    for path in texts:
        text = path.read_text()
        cited.update(re.findall(r"\bdocs/[\w./-]*\w", text))
        outside += [f"{path.name}: {m}" for m in re.findall(r"(?<![.\w])\.\./[\w./-]+|shared/DESIGN", text)]
    missing = sorted(c for c in cited if not (ROOT / c).exists())
    assert not missing, missing
    assert not outside, outside
