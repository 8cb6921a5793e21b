"""The house rules DEVELOPERS.md states, checked on the source: which folder may import which,
and how long a function or a module may grow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("transforms", "pipeline", "trainer", "demo", "cli")
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400
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


def sources():
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    package = ["jestflow", *path.relative_to(ROOT).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path):
    relative = str(path.relative_to(ROOT))
    banned = FORBIDDEN[path.relative_to(ROOT).parts[0]]
    wrong = sorted(n for n in imported(path) if n.startswith(banned))
    assert not wrong, f"{relative} imports {wrong}"


def test_no_function_or_module_is_too_long():
    long = []
    for path in sources():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert not long, long


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
