"""The results page: generated from bench/results.json (bench/results_page.py), each entry labelled
with its command, date, machine and commit, its numbers formatted from the data, its plots valid
PNGs that are the same bytes from one build to the next; and bench/common_results.py's record(),
which writes one entry and keeps the others."""

from __future__ import annotations

import importlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
PNG = b"\x89PNG\r\n\x1a\n"


def bench_module(name: str):
    """A module of bench/, imported with bench/ on sys.path only while it is imported (as the
    docs hook does), so that no bench script hides a module from the other tests."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def page():
    return bench_module("results_page")


@pytest.fixture(scope="module")
def committed():
    return json.loads((BENCH / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rendered(page, committed):
    return page.render(committed)


def entry(command: str, date: str, commit: str, data: dict, **more) -> dict:
    found = {"title": command.split()[1], "command": command, "date": date}
    return found | {"machine": f"machine of {commit}", "commit": commit, "data": data} | more


def small_results(seconds: float = 21.4) -> dict:
    curve = [[step, 5.0 - step / 100, step * 1e9, step / 10] for step in (10, 20, 30, 40)]
    arms = [
        {"arm": "uniform", "seeds": 1, "final_loss": [4.6, 0.0], "speed_up": [1.0, 0.0]},
        {"arm": "offline + online", "seeds": 1, "final_loss": [4.123, 0.0]}
        | {"speed_up": [3.75, 0.0], "compute_saving": [2.5, 0.1], "clean": 0.875},
    ]
    tasks = {
        "lm": {"steps": 40, "arms": arms, "curves": {"uniform": curve, "offline + online": curve}}
    }
    cache = {"rows": [{"run": "warm cache", "inputs": 4096, "seconds": seconds, "ratio": 0.2}]}
    clone = {"targets": [{"target": "make test", "seconds": 382}], "total_seconds": 400}
    return {
        "cache": entry("python bench/cache.py", "2026-01-02", "abc1234", cache),
        "data_efficiency_x": entry(
            "python bench/data_efficiency.py --tasks lm",
            "2026-01-03",
            "def5678+dirty",
            {"tasks": tasks},
            note="a note on this run",
        ),
        "fresh_clone": entry("python bench/fresh_clone.py", "2026-01-04", "0123abc", clone),
        "something_new": entry(
            "python bench/new.py", "2026-01-05", "4567def", {"rows": [{"x": 7}]}
        ),
    }


def test_a_page_labels_each_entry_and_shows_its_numbers(page):
    results = small_results()
    text, _ = page.render(results)
    for name, found in results.items():
        for key in ("command", "date", "machine", "commit"):
            assert found[key] in text, (name, key)
    assert "a note on this run" in text
    assert "| warm cache | 4,096 | 21.4 | 0.20 |" in text  # the cache entry's row
    assert "| offline + online | 1 | 4.123 ± 0.000 | 3.75 ± 0.0× | 2.5 ± 0.1× | 88 % |" in text
    assert "| make test | 6 min 22 s | 382 |" in text and "| total | 6 min 40 s | 400 |" in text
    assert "| 7 |" in text  # an entry no section knows still shows its rows
    assert re.search(r"\{#data-efficiency-x\}", text)  # a stable anchor per entry


def test_the_numbers_come_from_the_data(page):
    before, _ = page.render(small_results(21.4))
    after, _ = page.render(small_results(33.3))
    assert "21.4" in before and "21.4" not in after and "33.3" in after


def test_the_plots_are_valid_images_and_each_is_on_the_page(page):
    from PIL import Image

    text, images = page.render(small_results())
    assert {"cache.png", "fresh-clone.png", "data-efficiency-x-lm-curves.png"} <= set(images)
    for name, data in images.items():
        assert data.startswith(PNG), name
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            assert image.size[0] >= 400 and image.size[1] >= 150, (name, image.size)
        assert f"](results/{name})" in text
    assert set(re.findall(r"\]\(results/([^)]+)\)", text)) == set(images)


def test_every_committed_entry_is_labelled(committed):
    assert committed
    for name, found in committed.items():
        assert found["command"].strip() and found["machine"].strip(), name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", found["date"]), name
        assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", found["commit"]), name
        assert isinstance(found["data"], dict) and found["data"], name


def test_the_committed_results_render_the_same_bytes_twice(page, committed, rendered):
    text, images = rendered
    again = page.render(committed)
    assert again == (text, images)
    for name, found in committed.items():
        assert found["command"] in text and found["commit"] in text, name
    assert images and all(data.startswith(PNG) for data in images.values())


def test_the_committed_file_is_stable_json(committed):
    common_results = bench_module("common_results")
    text = (BENCH / "results.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    out = io.StringIO()
    out.write(json.dumps(committed, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    assert text == out.getvalue()
    assert common_results.RESULTS == BENCH / "results.json"


def test_record_replaces_one_entry_and_keeps_the_others(tmp_path, monkeypatch):
    common_results = bench_module("common_results")
    monkeypatch.delenv("BENCH_RECORD", raising=False)
    path = tmp_path / "results.json"
    first = {"title": "old", "command": "python bench/a.py", "date": "2026-01-01"}
    path.write_text(json.dumps({"a": first | {"data": {"x": 1}}, "z": {"data": {"y": 2}}}))
    made = common_results.record(
        "a", title="new", command="python bench/a.py --more", data={"x": 3}, path=path
    )
    found = json.loads(path.read_text())
    assert list(found) == ["a", "z"] and found["z"] == {"data": {"y": 2}}
    assert found["a"] == made and made["data"] == {"x": 3} and "note" not in made
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", made["date"])
    assert "torch" in made["machine"] and made["commit"]
    common_results.record("b", title="b", command="c", data={}, note="n", path=path)
    assert list(json.loads(path.read_text())) == ["a", "b", "z"]
    assert path.read_text().endswith("}\n")
    monkeypatch.setenv("BENCH_RECORD", "0")
    common_results.record("c", title="c", command="c", data={}, path=path)
    assert "c" not in json.loads(path.read_text())


@pytest.mark.parametrize(
    "text, value",
    [
        ("1,928", 1928),
        ("92.5 %", 0.925),
        ("3.3×", 3.3),
        ("**2.747 ± 0.005**", [2.747, 0.005]),
        ("—", None),
        ("13 × 8", "13 × 8"),
        ("648¹", "648¹"),
    ],
)
def test_a_printed_cell_reads_back_as_data(text, value):
    assert bench_module("common_results").parse_cell(text) == value


def test_the_page_opens_with_the_demos_three_tasks_from_its_entry(rendered, committed):
    markdown, _ = rendered
    glance = markdown[markdown.index("## At a glance") : markdown.index("## What is here")]
    demo = committed["demo"]
    assert demo["commit"] in glance and demo["date"] in glance
    rows = [line for line in glance.splitlines() if line.startswith("| ") and "×" not in line[:9]]
    tasks = [row.split("|")[1].strip() for row in rows[1:]]
    assert tasks == demo["data"]["order"]
    for row, task in zip(rows[1:], tasks, strict=True):
        jest = demo["data"]["tasks"][task]["runs"]["student-jest"]
        assert f"{jest['compute_saving']:.1f}×" in row and f"{jest['time_saving']:.1f}×" in row
