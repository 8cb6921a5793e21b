"""MkDocs hooks: lay out the package for the API reference, and generate the results page."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("transforms", "pipeline", "trainer", "cli", "demo")


def lay_out_package() -> None:
    """`jestflow.<name>` lives in the top-level folder `<name>/` (pyproject's package-dir);
    griffe reads sources by module path, so build/api-src/jestflow/<name> links to each."""
    package = ROOT / "build" / "api-src" / "jestflow"
    package.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = package / name
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", "..", name))


lay_out_package()  # at load time: before mkdocstrings reads its paths


def on_files(files, config):
    """The results page, `results.md` at the docs root, and its plots, `results/<name>.png`,
    generated from bench/results.json by bench/results_page.py."""
    results = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    page, images = results_page().render(results)
    files.append(File.generated(config, "results.md", content=page))
    for name, data in sorted(images.items()):
        files.append(File.generated(config, f"results/{name}", content=data))
    return files


def results_page():
    """bench/results_page.py, imported by its path; bench/ is on sys.path only while it and its
    helpers (bench/common_page*.py, bench/common_plots.py) are imported, so that no bench script
    hides a module of the same name from the rest of the build."""
    bench = str(ROOT / "bench")
    sys.path.insert(0, bench)
    try:
        return importlib.import_module("results_page")
    finally:
        sys.path.remove(bench)
