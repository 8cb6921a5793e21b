"""CI on a fresh clone, timed: what a new contributor waits for.

Clones the repository (`git clone` of `--repo`, default this one: its committed HEAD, not the
working tree's changes) into a temporary folder, with `../shared` beside the clone linked to
`--shared`, then runs there, one after another, `make setup` (the one-time set-up: the virtual
environment from the lock, which the first target would otherwise do), `make test`, `make
test-kernels`, `make test-broken`, `make test-slow` and `make docs` (as .ci/run does), then
`make demo` (what a new user runs first), each timed by the wall clock. Prints a table and
records each target's seconds, CI's total and the total as the `fresh_clone` entry of
bench/results.json, with the clone's commit: the README's times come from it. Stops at the first target
that fails, and then records nothing. Each target's output goes to `--logs` (default: beside the
clone, removed with it unless `--keep`).

Give it the machine: about 35 minutes on 2 cores, and `make setup` downloads the locked
packages.

Run: python bench/fresh_clone.py [--repo .] [--shared /work/shared] [--logs DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common_results import ROOT, command_line, commit, record

CI = ("test", "test-kernels", "test-broken", "test-slow", "docs")  # .ci/run's
TARGETS = ("setup", *CI, "demo")


def clean_env() -> dict[str, str]:
    """This environment without an activated virtual environment: the clone makes its own."""
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    if venv:
        paths = env.get("PATH", "").split(os.pathsep)
        env["PATH"] = os.pathsep.join(p for p in paths if Path(p) != Path(venv) / "bin")
    env.pop("PYTHONPATH", None)
    return env


def clone(repo: Path, shared: Path, where: Path) -> Path:
    """`git clone` of the repository into `where`, `../shared` beside it linked to `shared`."""
    target = where / repo.resolve().name
    subprocess.run(["git", "clone", "--quiet", str(repo), str(target)], check=True)
    if shared.exists():
        (where / "shared").symlink_to(shared.resolve(), target_is_directory=True)
    else:
        print(f"note: {shared} does not exist; no ../shared beside the clone")
    return target


def run_target(target: str, tree: Path, logs: Path, env: dict) -> float:
    """`make TARGET` in the clone, its output to `logs/TARGET.log`: its wall seconds. A failure
    ends the run with the log's tail."""
    log = logs / f"{target}.log"
    print(f"make {target} …", flush=True)
    began = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(["make", target], cwd=tree, env=env, stdout=f, stderr=f)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        sys.exit(f"make {target} failed (exit {done.returncode}) after {seconds:.0f} s:\n{tail}")
    print(f"make {target}: {minutes(seconds)}", flush=True)
    return seconds


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--shared", type=Path, default=Path("/work/shared"))
    parser.add_argument("--logs", type=Path, help="Default: beside the clone.")
    parser.add_argument("--keep", action="store_true", help="Keep the clone and its logs.")
    args = parser.parse_args()
    if commit(args.repo).endswith("+dirty"):
        print(f"note: {args.repo} has uncommitted changes; the clone tests its HEAD only")
    where = Path(tempfile.mkdtemp(prefix="jestflow-fresh-clone-"))
    try:
        tree = clone(args.repo, args.shared, where)
        head = commit(tree)
        logs = args.logs or where / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = clean_env()
        rows = [{"target": f"make {t}", "seconds": run_target(t, tree, logs, env)} for t in TARGETS]
    finally:
        if args.keep:
            print(f"the clone and its logs: {where}")
        else:
            shutil.rmtree(where, ignore_errors=True)
    total = sum(r["seconds"] for r in rows)
    ci = sum(r["seconds"] for r in rows if r["target"] in {f"make {t}" for t in CI})
    width = max(len(r["target"]) for r in rows)
    for r in [*rows, {"target": ".ci/run", "seconds": ci}, {"target": "total", "seconds": total}]:
        print(f"{r['target']:<{width}}  {r['seconds']:7.1f} s  {minutes(r['seconds']):>7}")
    data = {"targets": rows, "ci_seconds": ci, "total_seconds": total}
    title = "A fresh clone: set-up, CI's targets, the demo"
    record("fresh_clone", title=title, command=command_line(), data=data, commit_name=head)


if __name__ == "__main__":
    main()
