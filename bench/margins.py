"""Margins of the tests that assert what a trained model reaches, across CPU kernels and seeds.

torch's CPU results differ in the last bits between kernel paths, and three libraries choose
theirs by instruction set: ATen (`ATEN_CPU_CAPABILITY`), oneDNN (`ONEDNN_MAX_CPU_ISA`) and MKL
(`MKL_CBWR`). Setting only the first does not make this machine compute like another CPU, so
the settings (`SETTINGS` in bench/common.py) move all three. Training amplifies the differences:
a threshold close to what one machine happened to reach fails on another.

This runs the tests marked `learned` (they assert through the `learned` fixture, which records
each value) under every setting and training seed, then once with models that cannot learn
(learning rates ~0), and prints, per bound: the worst value over all runs and where it came from,
the best, the margin (worst − bound, in the bound's direction), and the broken models' value,
which must fail the bound. Exits non-zero if any margin is not positive or a broken model passes.

A learned test that ran (was not skipped) but recorded no bound in the broken run also fails
the check: a bound never reached cannot be shown to fail.

Run: python bench/margins.py [--seeds 0,1,2] [--settings native,aten-default,...]
[--tests 'learned and not minilm']
(about 21 minutes on 2 cores for the defaults without the MiniLM test: 7 settings × 3 seeds,
35–120 s each, and the broken run; `aten-avx512` only where the CPU has AVX-512)

`--broken-only` runs just the broken models, every `learned` test slow ones included, and exits
non-zero unless each recorded bound fails: CI runs it (`make test-broken`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import torch
from common import SETTINGS, available, kernel_env
from common_results import command_line, record

from jestflow.transforms.reporting.tables import text_table

ROOT = Path(__file__).resolve().parents[1]


def run_tests(
    setting: str, seed: int, log: Path, *, broken: bool = False, marker: str = "learned"
) -> tuple[int, float]:
    """The tests `marker` selects under one setting and seed; their values are appended to
    `log`, and the ids of the tests that ran (not skipped) written beside it (`<log>.ran`)."""
    env = kernel_env(setting)
    env |= {"JESTFLOW_TEST_SEED": str(seed), "JESTFLOW_LEARNED_LOG": str(log)}
    if broken:
        env["JESTFLOW_TEST_BROKEN"] = "1"
    junit = log.with_suffix(".xml")
    command = [sys.executable, "-m", "pytest", "-m", marker, "-q", "-p", "no:cacheprovider"]
    command += [f"--junitxml={junit}", str(ROOT / "tests")]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: a test failed, which the table shows
        sys.exit(f"pytest failed to run under {setting}, seed {seed}:\n{done.stdout[-3000:]}")
    Path(f"{log}.ran").write_text("".join(f"{t}\n" for t in tests_that_ran(junit)))
    return done.returncode, time.perf_counter() - start


def tests_that_ran(junit: Path) -> list[str]:
    """The node ids (as the `learned` fixture names them) of the tests in a JUnit report that
    were not skipped."""
    ran = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("skipped") is None:
            module = case.get("classname", "").replace(".", "/")
            ran.append(f"{module}.py::{case.get('name')}")
    return ran


def silent_tests(log: Path) -> list[str]:
    """Tests that ran in a run but recorded no bound: what they assert was never measured."""
    recorded = {json.loads(line)["test"] for line in read_lines(log)}
    return [t for t in read_lines(Path(f"{log}.ran")) if t not in recorded]


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def recorded(log: Path) -> list[tuple[tuple, float]]:
    """The bounds a run recorded: ((test, name, op, bound), value) each."""
    rows = [json.loads(line) for line in read_lines(log)]
    return [((r["test"], r["name"], r["op"], r["bound"]), r["value"]) for r in rows]


def margin(value: float, op: str, bound: float) -> float:
    return value - bound if op == ">" else bound - value


def collect(settings: list[str], seeds: list[int], marker: str) -> tuple[dict, dict, set]:
    """The `learned` tests under every setting and seed, then once with broken models: the
    values by (test, name, op, bound), as [(value, setting, seed)], the broken models', and
    the tests that ran somewhere without recording a bound."""
    values, silent = defaultdict(list), set()
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings:
            for seed in seeds:
                log = Path(tmp) / f"{setting}-{seed}.jsonl"
                rc, seconds = run_tests(setting, seed, log, marker=marker)
                print(
                    f"  {setting:13s} seed {seed}: {'passed' if rc == 0 else 'FAILED'} "
                    f"in {seconds:.0f} s",
                    flush=True,
                )
                silent.update(silent_tests(log))
                for key, value in recorded(log):
                    values[key].append((value, setting, seed))
        broken, broken_silent = broken_run(Path(tmp), settings[0], seeds[0], marker)
    return values, broken, silent | broken_silent


def broken_run(tmp: Path, setting: str, seed: int, marker: str) -> tuple[dict, set]:
    """The `learned` tests once with models that cannot learn: each bound's value by key, and
    the tests that ran without recording one."""
    log = tmp / "broken.jsonl"
    _, seconds = run_tests(setting, seed, log, broken=True, marker=marker)
    print(f"  {setting:13s} seed {seed}, broken models: ran in {seconds:.0f} s", flush=True)
    return dict(recorded(log)), set(silent_tests(log))


def bound_row(
    key: tuple, runs: list[tuple], b: float | None, broken_only: bool = False
) -> tuple[tuple, bool]:
    """One bound's table row, and whether it is bad: broken models pass it, or (unless only
    the broken run was made) it has no positive margin."""
    test, name, op, bound = key
    if runs:
        worst = min(runs, key=lambda v: margin(v[0], op, bound))
        best = max(runs, key=lambda v: margin(v[0], op, bound))
        m = margin(worst[0], op, bound)
        worst_text = f"{worst[0]:.4g} ({worst[1]}, seed {worst[2]})"
        best_text, m_text = f"{best[0]:.4g}", f"{m:+.3g}"
    else:
        m, worst_text, best_text, m_text = float("-inf"), "not reached", "", ""
    fails = b is not None and margin(b, op, bound) <= 0
    short = test.split("::")[-1][:48]
    row = (
        f"{short}: {name}",
        f"{op} {bound:.4g}",
        worst_text,
        best_text,
        m_text,
        "—" if b is None else f"{b:.4g}",
        "yes" if fails else "NO",
    )
    return row, (m <= 0 and not broken_only) or not fails


def bound_data(key: tuple, runs: list[tuple], broken: float | None) -> dict:
    """One bound's figures: the worst run (and where), the best, and the broken models'."""
    test, name, op, bound = key
    worst = min(runs, key=lambda v: margin(v[0], op, bound))
    best = max(runs, key=lambda v: margin(v[0], op, bound))
    return {
        "test": test,
        "name": name,
        "op": op,
        "bound": bound,
        "worst": worst[0],
        "worst_setting": worst[1],
        "worst_seed": worst[2],
        "best": best[0],
        "margin": margin(worst[0], op, bound),
        "broken": broken,
        "fails_broken": broken is not None and margin(broken, op, bound) <= 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default=",".join(available()))
    parser.add_argument("--broken-only", action="store_true", help="only the broken-model run")
    parser.add_argument("--tests", default="learned", help="the pytest -m expression to run")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        sys.exit(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")

    print(
        f"torch {torch.__version__}, native CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores"
    )
    if args.broken_only:
        with tempfile.TemporaryDirectory() as tmp:
            broken, silent = broken_run(Path(tmp), settings[0], seeds[0], args.tests)
        values = {}
    else:
        values, broken, silent = collect(settings, seeds, args.tests)
    rows, bad = [], 0
    for key in sorted(set(values) | set(broken)):
        row, is_bad = bound_row(key, values.get(key, []), broken.get(key), args.broken_only)
        rows.append(row)
        bad += is_bad

    header = ("test: bound", "bound", "worst (where)", "best", "margin", "broken", "fails broken")
    if args.broken_only:  # no trained runs: their columns would be empty
        header, rows = header[:2] + header[5:], [row[:2] + row[5:] for row in rows]
    print(f"\n{len(settings)} settings × seeds {seeds}; broken = learning rates ~0\n")
    print(text_table(rows, header=header, align="l" * len(header)))
    for test in sorted(silent):
        print(f"ran but recorded no bound: {test}")
    if not args.broken_only:  # CI's broken-only run measures no margins
        rows = [bound_data(key, values.get(key, []), broken.get(key)) for key in sorted(values)]
        data = {"settings": settings, "seeds": seeds, "tests": args.tests, "rows": rows}
        record("margins", title="Margins", command=command_line(), data=data)
    if bad or silent:
        sys.exit(
            f"\n{bad} bound(s) without a positive margin or passing with broken models, "
            f"{len(silent)} learned test(s) that recorded no bound"
        )


if __name__ == "__main__":
    main()
