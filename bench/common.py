"""What the bench scripts share about the machine and its processes: the CPU's name, the CPU
kernel settings, resident memory of a process tree (polled from /proc), CUDA-synchronised
timing, `jestflow curate` run in a fresh process and watched, and true Jaccard similarity of
shingle sets. Scripts import it as `common`: `python bench/x.py` searches bench/ first."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
POLL_S = 0.2  # how often a process tree's RSS is read
LOG_RSS_EVERY_S = 30.0  # how often `run_curate` writes the tree's RSS to its log
SPILL_EVERY_S = 5.0  # how often `run_curate` measures the job's spill files


# --- the machine ---------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


SETTINGS = {
    "native": {},  # what torch picks on this machine
    "aten-avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    # This machine computing as far as it can like an AVX2-only CPU, and like an old one; the
    # second setting is the one `make test-kernels` (CI) runs the suite under.
    "avx2-cpu": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "old-cpu": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    # MKL's generic code path: the only one seen here whose results change with the thread count.
    "mkl-generic": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_CBWR": "COMPATIBLE",
    },
}
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def available() -> list[str]:
    """The kernel settings this CPU can run (AVX-512 only where the processor has it)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return [name for name in SETTINGS if "avx512" not in name or "avx512f" in flags]


def kernel_env(setting: str) -> dict[str, str]:
    """This process's environment with one kernel setting in place of any other."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    return env | SETTINGS[setting]


# --- memory and time -----------------------------------------------------------------------------


def descendants(root: int) -> list[int]:
    """root and all its descendants, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def rss_of(pid: int) -> int:
    """One process's resident bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> tuple[int, int]:
    """(resident bytes summed over the process tree, number of processes)."""
    total = n = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            n += 1
        except (OSError, IndexError, ValueError):
            continue
    return total, n


def wait_tree_peak(proc: subprocess.Popen, every: float = POLL_S) -> tuple[int, int]:
    """Poll the tree under `proc` until `proc` exits: (peak resident bytes, most processes)."""
    peak = procs = 0
    while proc.poll() is None:
        rss, n = tree_rss(proc.pid)
        peak, procs = max(peak, rss), max(procs, n)
        time.sleep(every)
    return peak, procs


def peak_rss_kib(reset: bool = False) -> int:
    """This process's own peak RSS (VmHWM, KiB), optionally first lowered to the current RSS.

    Not ru_maxrss: in a spawned child it also counts the parent's RSS at fork time."""
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def synced_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of fn(), synchronising CUDA before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under `folder` (0 when it is not there)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


# --- `jestflow curate` in a fresh process --------------------------------------------------------


def jestflow_cli() -> str:
    beside = Path(sys.executable).with_name("jestflow")
    found = str(beside) if beside.exists() else shutil.which("jestflow")
    if found is None:
        sys.exit("no `jestflow` command beside this Python or on PATH: pip install -e . first")
    return found


def curate_command(inputs, teacher: str, output: Path, args) -> list[str]:
    """`jestflow curate` on an LM pool with the options in `args` (keep, super_batch, workers,
    seed, dedup, and `extra`: more options as given)."""
    command = [jestflow_cli(), "curate", *inputs, "-o", str(output), "--teacher", teacher]
    command += ["--task", "lm", "--keep", str(args.keep), "--super-batch", str(args.super_batch)]
    command += ["--workers", str(args.workers), "--seed", str(args.seed), "--device", "cpu"]
    command += ["--dedup", args.dedup] if args.dedup else []
    return command + list(getattr(args, "extra", ()))  # more curate options


def read_lines(proc: subprocess.Popen, start: float, note) -> tuple[threading.Thread, list]:
    """A thread collecting `proc`'s output lines as (seconds since `start`, line), each noted."""
    lines: list[tuple[float, str]] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.perf_counter() - start
            lines.append((t, line.rstrip("\n")))
            note(t, line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return reader, lines


def watch_tree(proc: subprocess.Popen, start: float, output: Path, note) -> tuple[list, int]:
    """Poll the tree under `proc` until it exits: RSS samples (seconds, tree RSS, processes,
    runner RSS), and the largest size of the job's spill files (`output/_temporary`)."""
    samples: list[tuple[float, int, int, int]] = []
    next_note, next_spill, spill = LOG_RSS_EVERY_S, 0.0, 0
    while proc.poll() is None:
        t = time.perf_counter() - start
        rss, n = tree_rss(proc.pid)
        samples.append((t, rss, n, rss_of(proc.pid)))
        if t >= next_spill:
            spill, next_spill = max(spill, folder_bytes(output / "_temporary")), t + SPILL_EVERY_S
        if t >= next_note:
            note(t, f"[bench] tree RSS {rss / MIB:,.0f} MiB over {n} processes")
            next_note += LOG_RSS_EVERY_S
        time.sleep(POLL_S)
    return samples, spill


def run_curate(inputs, teacher: str, output: Path, log_path: Path, args) -> dict:
    """`jestflow curate` in a fresh process: seconds, RSS samples, CPU time, its output lines.
    Its time-stamped output, with the tree's RSS every 30 s, goes to `log_path`."""
    command = curate_command(inputs, teacher, output, args)
    lock = threading.Lock()
    cpu_before = children_cpu_s()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:

        def note(t: float, text: str) -> None:
            with lock:
                log.write(f"[{t:8.1f} s] {text}\n")
                log.flush()

        note(0.0, "$ " + " ".join(command))
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        reader, lines = read_lines(proc, start, note)
        samples, spill = watch_tree(proc, start, output, note)
        seconds = time.perf_counter() - start
        reader.join(timeout=10)
        note(seconds, f"[bench] exit {proc.returncode} after {seconds:.1f} s")
    if proc.returncode != 0:
        tail = "\n".join(text for _, text in lines[-60:])
        sys.exit(
            f"jestflow curate failed, exit {proc.returncode} after {seconds:.0f} s "
            f"(log: {log_path}):\n{tail}"
        )
    return {
        "seconds": seconds,
        "cpu_s": children_cpu_s() - cpu_before,
        "peak_mib": max((s[1] for s in samples), default=0) / MIB,
        "runner_mib": max((s[3] for s in samples), default=0) / MIB,
        "procs": max((s[2] for s in samples), default=0),
        "spill_mib": spill / MIB,
        "samples": samples,
        "lines": lines,
    }


# --- near copies ---------------------------------------------------------------------------------


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def near_duplicates(shingle_sets: list[set[str]], threshold: float) -> set[int]:
    """The sets whose true Jaccard similarity with another of them reaches the threshold (every
    pair whose sizes allow it is compared)."""
    order = sorted(range(len(shingle_sets)), key=lambda i: len(shingle_sets[i]))
    similar = set()
    for n, i in enumerate(order):
        a = shingle_sets[i]
        for j in order[n + 1 :]:
            b = shingle_sets[j]
            if len(a) < threshold * len(b):
                break
            if jaccard(a, b) >= threshold:
                similar.update((i, j))
    return similar
