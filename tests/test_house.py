"""The house rules DEVELOPERS.md states, checked on the source: which folder may import which, no
import cycle, how long a function or a module may grow, and how few formatter exemptions."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("transforms", "pipeline", "trainer", "demo", "cli")
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400
MAX_FORMATTER_EXEMPTIONS = 10  # formatter off blocks and skipped lines, in the whole tree
ON_TOP = ("jestflow.trainer", "jestflow.cli", "jestflow.demo")
# What each folder must never import: the core nothing of ours, the Beam job and the trainer not
# each other, the demo not the CLI. The CLI sits on top of everything.
FORBIDDEN = {
    "transforms": ("apache_beam", "jestflow.pipeline", *ON_TOP),
    "pipeline": ON_TOP,
    "trainer": ("apache_beam", "jestflow.pipeline", "jestflow.cli", "jestflow.demo"),
    "demo": ("jestflow.cli",),
    "cli": (),
}


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(["jestflow", *(parts[:-1] if parts[-1] == "__init__" else parts)])


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in a module, anywhere in it (in functions, under
    TYPE_CHECKING), relative imports resolved: `import M` gives (M, []), `from M import a` (M, [a])."""
    package = ["jestflow", *path.relative_to(ROOT).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((module, [alias.name for alias in node.names]))
    return found


def imported(path: Path) -> set[str]:
    """Absolute names of everything a module imports: the modules, and `M.a` for `from M import a`
    (which may be a module too)."""
    return {
        n for module, names in imports(path) for n in (module, *(f"{module}.{a}" for a in names))
    }


def modules_imported(path: Path) -> set[str]:
    """The modules a module imports (`from M import name` gives M alone)."""
    return {module for module, _ in imports(path)}


def test_the_cli_uses_the_demo_package_api():
    """`cli/` imports `jestflow.demo` (its `__init__`), never a module inside it."""
    wrong = {
        str(path.relative_to(ROOT)): sorted(
            f"{module}" for module in modules_imported(path) if module.startswith("jestflow.demo.")
        )
        for path in sources("cli")
    }
    assert not {k: v for k, v in wrong.items() if v}


@pytest.mark.parametrize("path", sources(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path):
    banned = FORBIDDEN[path.relative_to(ROOT).parts[0]]
    wrong = sorted(n for n in imported(path) if n.startswith(banned))
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


@cache
def import_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports. Importing `a.b.c` runs the packages `a.b` and
    `a` first, so a module also depends on the packages above what it imports."""
    modules = {module_name(p): p for p in sources(*PACKAGES)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported_name in imported(path):
            parts = imported_name.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[name] = {t for t in targets & modules.keys() if t != name}
        graph[name] -= {n for n in graph[name] if name.startswith(n + ".")}  # its own packages
    return graph


def cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    cycle = cycle_from(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_from(graph) == ["a", "b", "c", "a"]
    assert cycle_from({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("folder", [*PACKAGES, "bench"])
def test_no_function_or_module_is_too_long(folder):
    long = []
    for path in sources(folder):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert not long, long


def test_the_formatter_decides():
    """`ruff format` lays out the code; an exemption from it (an off/on block around a table of
    literals that reads better as written) is rare."""
    marker = re.compile(r"#\s*fmt:\s*(off|skip)\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sources(*PACKAGES, "tests", "bench", "deploy")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if marker.search(line)
    ]
    assert len(found) <= MAX_FORMATTER_EXEMPTIONS, found


# Names libraries look for when they are installed, which a bench script must not take either:
# transformers imports `kernels` (Hugging Face's hub kernels) wherever find_spec finds one.
PROBED = {"kernels", "accelerate", "datasets", "peft", "bitsandbytes", "timm"}


def test_bench_scripts_shadow_no_module():
    """`python bench/x.py` puts bench/ first on sys.path, so bench/x.py hides any module x."""
    import sys
    from importlib.metadata import packages_distributions

    taken = set(sys.stdlib_module_names) | set(packages_distributions()) | PROBED
    clashes = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.stem in taken)
    assert not clashes, f"bench scripts named like a module they would hide: {clashes}"


def test_every_package_is_installed():
    """A wheel holds only the packages pyproject.toml lists (Dockerfile: `pip install .`)."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {module_name(p) for p in sources(*PACKAGES) if p.name == "__init__.py"}
    assert found == listed


ROOMS = ("formats", "spill", "dedup", "selection", "reporting")


@pytest.mark.parametrize("room", [f"jestflow.transforms.{r}" for r in ROOMS] + ["jestflow.demo"])
def test_a_room_names_its_api_and_every_name_is_there(room):
    """A room's `__init__` names its public API without importing its modules (transforms/lazy.py);
    every name it offers resolves."""
    import importlib

    package = importlib.import_module(room)
    assert package.__all__ and all(getattr(package, name) is not None for name in package.__all__)


def test_reading_a_manifest_needs_neither_torch_nor_webdataset():
    """A notebook that reads a manifest imports the manifest reader, not the models (1.6 s of
    torch, when the rooms imported all of their modules)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom jestflow.transforms.formats import read_manifest\n"
        "print(sorted(m for m in ('torch', 'webdataset', 'apache_beam') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
