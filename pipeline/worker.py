"""Beam's local worker process (`FnApiRunner` with several workers starts one per worker), with
jestflow's logging set up before Beam loads: its lines show at the level the job was started
with, and Beam's start-up notices stay out of the way (see `transforms/reporting/logs.py`).

A worker ignores SIGINT: Ctrl-C reaches the whole process group, and the job's own process is the
one that answers it (`stop_workers`, then one line), not every worker with its own traceback."""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import time

from ..transforms.reporting import logs


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.configure(os.environ.get(logs.LEVEL_VARIABLE, "WARNING"))
    runpy.run_module("apache_beam.runners.worker.sdk_worker_main", run_name="__main__")


def stop_workers(timeout: float = 5.0) -> list[int]:
    """Terminate every process this one started (the local runner's workers and whatever they
    started), SIGKILL those still there after `timeout` seconds; their pids. Linux (/proc) only;
    elsewhere nothing is found."""
    found = descendants(os.getpid())
    for pid in found:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in found):
        time.sleep(0.05)
    for pid in found:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return found


def descendants(pid: int) -> list[int]:
    """The processes below `pid` in the process tree, read from /proc ([] without it)."""
    parents: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        stat = _stat(int(entry))
        if stat:  # else gone meanwhile
            parents.setdefault(int(stat[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, dead but not yet reaped, counts as gone)."""
    stat = _stat(pid)
    return bool(stat) and stat[0] != "Z"


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, …); [] when the
    process is gone. The name is in parentheses and may hold spaces: split after its ')'."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


if __name__ == "__main__":
    main()
