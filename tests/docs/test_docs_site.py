"""The README stays the first hour (short, with its sections, every link live), and the docs
site's pages are the ones mkdocs.yml lists; `make docs` (CI) builds the site with --strict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results.json"


def readme() -> str:
    return README.read_text()


def test_the_readme_fits_in_15_kb():
    assert len(README.read_bytes()) <= 15_000


def test_the_readme_opens_with_the_two_commands_then_has_the_first_hours_sections():
    text = readme()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert [line.split()[:2] for line in first_block.splitlines()] == [
        ["make", "demo"],
        ["make", "test"],
    ]
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == [
        "Install",
        "Quick start: your own text",
        "Quick start: image–text pairs with a CLIP or SigLIP teacher",
        "Read the shards in any trainer",
        "Output",
        "Run on Dataflow, Flink or Spark",
        "The CLI",
        "Documentation",
    ]
    install = text[text.index("## Install") : text.index("## Quick start")]
    assert "pip install -e ." in install and "make setup" in install
    shards = text[text.index("## Read the shards") : text.index("## Output")]
    assert "import webdataset" in shards and "from datasets import load_dataset" in shards


def test_every_link_of_the_readme_names_a_file_of_the_repository():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme())
    local = [link for link in links if "://" not in link]
    assert local, "the README links into docs/"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing


def test_the_readme_links_every_page_of_the_site_that_is_a_file():
    """Every hand-written page in mkdocs.yml's nav exists, and the README reaches each one (the
    CLI and API references and the results page are generated, so the README names them)."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(config["nav"]))
    generated = {"results.md"}
    written = [page for page in listed if page not in generated]
    assert all((ROOT / "docs" / page).exists() for page in written)
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == set(written), "a page on disk that the nav does not list, or the reverse"
    reached = set(re.findall(r"\(docs/([^)#]+\.md)", readme()))
    unlinked = (
        set(written) - reached - {"reference/cli.md", "reference/api.md", "getting-started.md"}
    )
    assert not unlinked


def test_the_quick_start_snippets_the_site_includes_are_marked_in_the_readme():
    text = readme()
    for page in (ROOT / "docs").rglob("*.md"):
        for section in re.findall(r'--8<-- "README.md:([a-z-]+)"', page.read_text()):
            assert f"<!-- --8<-- [start:{section}] -->" in text, (page, section)
            assert f"<!-- --8<-- [end:{section}] -->" in text, (page, section)


def flat(text: str) -> str:
    return " ".join(text.split())


def minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


def test_the_readmes_figure_is_the_demo_runs_on_the_results_page():
    entry = json.loads(RESULTS.read_text())["demo"]
    jest = entry["data"]["tasks"]["lm"]["runs"]["student-jest"]
    expected = (
        f"**{jest['speed_up']:.1f}× fewer steps with {jest['compute_saving']:.1f}× less "
        f"compute** (online scoring counted) and {jest['time_saving']:.1f}× less time"
    )
    assert expected in flat(readme())


def test_the_readmes_times_are_those_of_the_last_fresh_clone_run():
    """The README states the time of each of `make setup`, `make test` and `make demo` that the
    last run of bench/fresh_clone.py timed, as results.json holds it."""
    entry = json.loads(RESULTS.read_text())["fresh_clone"]
    rows = {row["target"]: row for row in entry["data"]["targets"]}
    stated = []
    for target in ("make setup", "make test", "make demo"):
        if target in rows:
            with_what = f" (with {rows[target]['includes']})" if "includes" in rows[target] else ""
            stated.append(f"`{target}` {minutes(rows[target]['seconds'])}{with_what}")
    assert stated
    expected = (
        f"On the last fresh-clone run ({entry['date']}, {entry['machine']}): {', '.join(stated)}."
    )
    times = re.search(r"<!-- times -->(.*?)<!-- /times -->", readme(), re.S)
    assert times, "the README lost its times"
    assert flat(times.group(1)) == expected
