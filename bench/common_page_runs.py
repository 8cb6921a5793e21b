"""The results page's sections on training runs (bench/results_page.py): the demo and the
data-efficiency benchmark, each run's tables, the teacher's pass, and plots of the held-out loss
and of the savings. Every number is formatted from the recorded data."""

from __future__ import annotations

import common_plots as plots
from common_page import fmt, picture, seconds_text, slug, table

RUNS = ("student-uniform", "student-jest")
STAGES = ("teacher", "curate", "student-uniform", "student-jest")
SAVINGS = {"speed_up": "steps", "compute_saving": "compute", "time_saving": "time"}


def reached(row: dict) -> str | None:
    if row.get("reached") is None:
        return None
    return f"{row['reached']}/{row['seeds']}" if row.get("seeds") else str(row["reached"])


ARMS = [("arm", "arm", "", "l"), ("data", "data", "", "l"), ("seeds", "seeds", "d")]
ARMS += [("final_loss", "final held-out loss", ".3f"), ("recall", "recall@1", ".3f")]
ARMS += [("speed_up", "steps-to-target", ".1f×"), ("compute_saving", "compute-to-target", ".1f×")]
ARMS += [("time_saving", "time-to-target", ".1f×"), (reached, "reached", "", "r")]
ARMS += [("clean", "clean share", ".0%"), ("seconds", "step s", ".0f")]
ARMS += [("train_score_seconds", "train+score s", ".0f"), ("cheap_rho", "ρ cheap", ".2f")]
PER_SEED = [("arm", "arm", "", "l"), ("seed", "seed", "d")]
PER_SEED += [("steps_to_target", "steps to target", "d"), ("speed_up", "steps ×", ".2f×")]
PER_SEED += [("compute_saving", "compute ×", ".2f×"), ("time_saving", "time ×", ".2f×")]
PER_SEED += [("final_loss", "final loss", ".3f"), ("recall", "recall@1", ".3f")]


def demo(name: str, entry: dict) -> tuple[str, dict]:
    """Each task's two students, the seconds of its stages, the teacher's pass, the curves."""
    data, text, images = entry["data"], [], {}
    if data.get("wall_seconds") is not None:
        peak = data.get("peak_rss_mib")
        memory = "" if peak is None else f"; peak RSS of its process tree {peak:,.0f} MiB"
        text.append(
            f"The whole demo: {seconds_text(data['wall_seconds'])} of wall clock{memory}.\n"
        )
    for task in data.get("order") or list(data["tasks"]):
        found = data["tasks"][task]
        runs = [{"run": run, **found["runs"][run]} for run in RUNS if run in found["runs"]]
        target = found["runs"]["student-uniform"]["final_eval_loss"]
        columns = [("run", "run", "", "l"), ("steps_to_target", f"steps to {target:.3f}", "d")]
        columns += [("speed_up", "× fewer", ".1f×"), ("compute_saving", "compute ×", ".1f×")]
        columns += [("time_saving", "time ×", ".1f×"), ("final_eval_loss", "final loss", ".3f")]
        columns += [("final_recall_at_1", "recall@1", ".3f"), ("clean_fraction", "clean", ".0%")]
        columns += [("step_seconds", "step s", ".0f"), ("seconds", "seconds", ".0f")]
        teacher = found.get("teacher", {}).get("kind")
        text.append(f"**{task}** (teacher: {teacher})\n\n" + table(runs, columns))
        seconds = found.get("seconds", {})
        stages = [f"{s} {seconds[s]:.0f} s" for s in STAGES if s in seconds]
        text.append(f"\nWall time of the stages: {', '.join(stages)}. {demo_pass(found)}\n")
        if found.get("curves"):
            series = {run: found["curves"][run] for run in RUNS if run in found["curves"]}
            image = plots.curves(f"The demo, {task}: held-out loss", series, target)
            text.append(picture(images, f"{slug(name)}-{task}.png", image, f"{task} curves"))
    return "\n".join(text), images


def demo_pass(found: dict) -> str:
    paid = found.get("teacher_pass")
    if not paid:
        return ""
    text = f"The teacher's pass over the pool (curate): {paid['seconds']:.0f} s, "
    if paid.get("break_even_runs") is None:
        return text + "not paid back (no time saved)."
    runs = f"paid back by {paid['break_even_runs']:.2f} student runs on its shards"
    return text + runs + f" ({paid['with_teacher_runs']:.2f} with the teacher's own training)."


def data_efficiency(name: str, entry: dict) -> tuple[str, dict]:
    """Per task: the arms, the teacher's pass, each seed, and plots of the savings and of the
    first seed's held-out curves."""
    data, text, images = entry["data"], [], {}
    for task, found in data["tasks"].items():
        steps = f", {fmt(found['steps'], ',d')} steps" if found.get("steps") else ""
        text.append(f"**{task}**{steps}\n\n" + table(found["arms"], ARMS))
        text.append(pass_text(found.get("teacher_pass")))
        text.append(per_seed(found))
        image = savings(entry, task, found)
        if image:
            text.append(picture(images, f"{slug(name)}-{task}-savings.png", image, "savings"))
        if found.get("curves"):
            image = run_curves(entry, task, found)
            text.append(picture(images, f"{slug(name)}-{task}-curves.png", image, "curves"))
    text += [f"{note}\n" for note in data.get("footnotes", [])]
    return "\n".join(t for t in text if t), images


def pass_text(found: dict | None) -> str:
    """The teacher's one pass over the pool, and the student runs that pay it back."""
    if not found:
        return ""
    parts = []
    if found.get("flops") is not None:
        share = found.get("flops_share")
        of = "" if share is None else f" ({share:.2f}× a uniform run's training)"
        parts.append(f"{found['flops']:.3g} FLOPs{of}")
    if found.get("seconds") is not None:
        share = found.get("seconds_share")
        of = "" if share is None else f" ({share:.2f}× a uniform run's steps)"
        parts.append(f"{found['seconds']:.0f} s{of}")
    text = "The teacher's one pass over the pool (the `curate` run): " + ", ".join(parts) + "."
    runs = found.get("break_even_runs") or {}
    if runs:
        text += " Student runs on its shards that pay it back: " + pairs(runs) + "."
    trained, more = (
        found.get("teacher_training_seconds"),
        found.get("break_even_runs_with_training"),
    )
    if trained is not None and more:
        text += f" With the teacher's own training ({trained:.0f} s): {pairs(more)}."
    return text + "\n"


def pairs(runs: dict) -> str:
    return ", ".join(f"{arm} {n:.2f}" for arm, n in runs.items())


def per_seed(found: dict) -> str:
    """Each seed of the arms run on more than one, folded away."""
    seeds = found.get("per_seed") or {}
    order = [a["arm"] for a in found["arms"] if a["arm"] in seeds] + sorted(
        set(seeds) - {a["arm"] for a in found["arms"]}
    )
    rows = [{"arm": arm, **s} for arm in order for s in seeds[arm] if len(seeds[arm]) > 1]
    if not rows:
        return ""
    body = table(rows, PER_SEED).replace("\n", "\n    ").rstrip()
    return f'??? note "Each seed"\n\n    {body}\n'


def savings(entry: dict, task: str, found: dict) -> bytes | None:
    """Bars of each arm's savings against uniform (a dashed line at 1×), with their spread."""
    arms = [a for a in found["arms"][1:] if a.get("speed_up") is not None]  # uniform: the first
    if not arms or not any(isinstance(a.get("speed_up"), int | float | list) for a in arms):
        return None
    groups = {
        label: [a.get(key) if isinstance(a.get(key), int | float | list) else None for a in arms]
        for key, label in SAVINGS.items()
        if any(a.get(key) is not None for a in arms)
    }
    title = f"{entry['title']}: {task}, savings to the uniform run's final loss"
    return plots.bars(title, [a["arm"] for a in arms], groups, "× fewer than uniform", line=1.0)


def run_curves(entry: dict, task: str, found: dict) -> bytes:
    arms = [a["arm"] for a in found["arms"] if a["arm"] in found["curves"]]
    series = {arm: found["curves"][arm] for arm in arms}
    seed = next(iter(found.get("per_seed", {}).get("uniform", [])), {}).get("seed", 0)
    target = series["uniform"][-1][1] if "uniform" in series else None
    title = f"{entry['title']}: {task}, seed {seed}, held-out loss"
    return plots.curves(title, series, target)
