"""The curation job: the run's preparation (every side effect, before any graph is
built), and running it to completion on the local runner or any runner Beam's options name.

    config.CurateConfig, RunPlan     what is run; what preparing it found
    prepare_run(config) -> RunPlan   list the inputs, fingerprint the models, check the device
                                     (local runs), prepare the output folder, start the run record
    graph.build(pipeline, config, plan)   the graph only
    run_curation(config)             prepare, build, run, check; returns stats.json

Outputs (the run folder, `transforms/formats/run_folder.py`): `shards/`, `manifest/`, `rejected/`,
`stats.json`, `report.html`, `run.json`, `_SUCCESS`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import posixpath
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.job.utils import dict_to_struct
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import checkpoint_task, fingerprint, pair_loss_of, tokens_of
from ..transforms.formats.parquet import first_row
from ..transforms.formats.run_folder import (
    REJECTED,
    STATS,
    input_files,
    is_complete,
    now,
    prepare,
    versions,
)
from ..transforms.models.scoring import resolve_device
from ..transforms.paths import filesystem, read_json
from ..transforms.readers import input_urls
from ..transforms.selection.offline import kept_count
from .config import CurateConfig, RunPlan, options_of
from .counters import NAMESPACE
from .graph import build

FLEX_TEMPLATE = "JESTFLOW_FLEX_TEMPLATE"  # set by deploy/flex_template/main.py: a launch-time build
log = logging.getLogger(__name__)


def prepare_run(config: CurateConfig, *, runner: str, local: bool) -> RunPlan:
    """Every side effect before the graph, so bad options fail before any work is done."""
    started = time.time()
    whole = config.lm_scoring is not None and config.lm_scoring.whole
    urls = input_urls(config.inputs)
    fingerprints = {role: fingerprint(path) for role, path in config.models.items()}
    classifiers = tuple(
        r for r, path in config.models.items() if checkpoint_task(path) == "classifier"
    )
    if local:  # remote workers have their own devices
        resolve_device(config.device)
    warn_if_rounded(config.selection.keep, config.super_batch)
    check_student_tokens(config)
    models = tuple(config.models.values())
    if prepare(config.output, overwrite=config.overwrite, inputs=(*urls, *models)) == "interrupted":
        log.info("%s holds an interrupted run (no _SUCCESS): redoing it", config.output)
    record = {
        "created": now(),
        "versions": versions(),
        "runner": runner,
        "options": options_of(config),
        "inputs": input_files(urls),
        "models": {
            role: {"path": config.models[role], "fingerprint": fp}
            for role, fp in fingerprints.items()
        },
    }
    return RunPlan(
        output=config.output,
        urls=urls,
        fingerprints=fingerprints,
        record=record,
        started=started,
        lm_scoring=config.lm_scoring,
        teacher_tokens=tokens_of(config.teacher)
        if whole and "teacher" not in classifiers
        else None,
        classifiers=classifiers,
        pair_loss=config.selection.pair_loss if config.task == "contrastive" else None,
    )


def with_pair_loss(config: CurateConfig) -> CurateConfig:
    """A contrastive run selects by the pair loss its teacher trained on, unless told another."""
    if config.task != "contrastive" or config.selection.loss is not None:
        return config
    selection = dataclasses.replace(config.selection, loss=pair_loss_of(config.teacher))
    return dataclasses.replace(config, selection=selection)


def check_student_tokens(config: CurateConfig) -> None:
    """lm learnability, ℓ(student) − ℓ(teacher), compares mean losses per token: both models
    must cut text into the same tokens."""
    if config.task != "lm" or config.student is None:
        return
    student, teacher = tokens_of(config.student), tokens_of(config.teacher)
    if student != teacher:
        raise JestflowError(
            f"student {config.student} cuts text into other tokens than teacher "
            f"{config.teacher} ({student} against {teacher}): learnability compares their losses "
            "per token, so both must tokenize alike"
        )


def warn_if_rounded(keep: float, super_batch: int) -> None:
    """Warn when whole examples per super-batch make the kept share much larger than `keep`
    (each super-batch keeps ⌈keep · n⌉, at least one)."""
    kept = kept_count(super_batch, keep)
    if kept <= keep * super_batch * 1.1:
        return
    log.warning(
        "--keep %g of a super-batch of %d is %.2f examples; each super-batch keeps %d, so about "
        "%.3g %% of the pool is kept instead of %.3g %%: raise --super-batch to %d or more for "
        "this fraction",
        keep,
        super_batch,
        keep * super_batch,
        kept,
        100 * kept / super_batch,
        100 * keep,
        math.ceil(10 / keep),
    )


def run_curation(config: CurateConfig) -> dict[str, Any] | None:
    """Run the job to completion; returns `stats.json` with Beam's counters added (None when the
    job was only staged as a template, `--template_location`)."""
    counters = _run_pipeline(config)
    if counters is None:
        return None  # a Flex Template launch: the job runs later and completes the output itself
    stats = check_records(config.output, config.inputs)
    stats["counters"] = counters  # Beam's view, for the caller; not written
    return stats


def unknown_beam_options(args: Sequence[str]) -> list[str]:
    """The options among `args` (`--name=value`) that no Beam options class declares, as
    `--name`, sorted: Beam itself drops them with a warning."""
    options = PipelineOptions(list(args))
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args": the caller says it
    try:
        every = options.get_all_options(retain_unknown_options=True)
        known = options.get_all_options()
    finally:
        beam_log.setLevel(level)
    return sorted(f"--{name}" for name in set(every) - set(known))


def _run_pipeline(config: CurateConfig) -> dict[str, int] | None:
    """Build and run the Beam pipeline, wait for it; its counters (None: staged as a template)."""
    given = {a.split("=", 1)[0].lstrip("-") for a in config.beam_args}
    options = PipelineOptions(
        config.beam_args,
        **{k: v for k, v in {"direct_num_workers": config.workers}.items() if k not in given},
    )
    template = options.view_as(GoogleCloudOptions).template_location
    if template and not os.environ.get(FLEX_TEMPLATE):
        raise JestflowError(
            "--template_location would stage a classic template, whose checks, input listing and "
            "output preparation run now and not at launch; use the Flex Template (deploy/)"
        )
    runner = None if "runner" in given else local_runner(config.workers)
    if runner is not None and config.torch_threads is None:
        threads = max(1, (os.cpu_count() or 1) // config.workers)
        config = dataclasses.replace(config, torch_threads=threads)
    config = with_pair_loss(config)
    pipeline = beam.Pipeline(runner=runner, options=options)
    plan = prepare_run(config, runner=type(pipeline.runner).__name__, local=runner is not None)
    build(pipeline, config, plan)
    result = pipeline.run()
    if template:
        return None
    result.wait_until_finish()
    return counters_of(result)


def check_records(output: str, inputs: Sequence[str]) -> dict[str, Any]:
    """The finished run's stats.json. A run that read no record, or parsed none, fails with the
    reason (its dead letters stay in `rejected/`); one that rejected most of them warns."""
    stats_url = posixpath.join(output, STATS)
    fs, path = filesystem(stats_url)
    if not fs.exists(path):
        raise JestflowError(f"the job finished without completing {output} (no {STATS})")
    stats = read_json(stats_url)
    counts, reasons = stats["counts"], stats["rejected"]
    why = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
    if not counts["inputs"]:
        raise JestflowError(f"no records in {', '.join(inputs)}")
    if counts["rejected"] == counts["inputs"]:
        raise JestflowError(
            f"none of the {counts['inputs']} records could be used ({why}); first: "
            f"{first_dead_letter(output)}; every record is in {output.rstrip('/')}/{REJECTED}/"
        )
    if not is_complete(output):
        raise JestflowError(f"the job finished without completing {output} (no _SUCCESS)")
    if counts["rejected"] * 2 > counts["inputs"]:
        log.warning(
            "%d of %d records were rejected (%s); first: %s",
            counts["rejected"],
            counts["inputs"],
            why,
            first_dead_letter(output),
        )
    return stats


def first_dead_letter(output: str) -> str:
    """Where the first dead letter came from and why (its detail names the fields it had)."""
    fs, root = filesystem(posixpath.join(output, REJECTED))
    parts = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".parquet"))
    with fs.open(parts[0], "rb") as f:
        row = first_row(f, ["source", "position", "detail"])
    return f"{row['source']} record {row['position']}: {row['detail']}"


def local_runner(workers: int) -> FnApiRunner:
    """Beam's FnApiRunner: in this process for one worker, else worker processes started through
    `pipeline/worker.py` (Beam's worker, with jestflow's logging set up first). Workers log
    warnings only, except jestflow's own lines."""
    info = beam_provision_api_pb2.ProvisionInfo(
        retrieval_token="unused-retrieval-token",
        pipeline_options=dict_to_struct({"default_sdk_harness_log_level": "WARNING"}),
    )
    environment = None
    if workers > 1:
        # exec: the worker replaces the shell Beam starts it with, so that it, not a shell that
        # dies of Ctrl-C, is the runner's child (pipeline/worker.py ignores SIGINT).
        command = f"exec {shlex.quote(sys.executable)} -m jestflow.pipeline.worker"
        environment = SubprocessSDKEnvironment.from_command_string(command)
        _quiet_running_mode_notice()
    return FnApiRunner(default_environment=environment, provision_info=ExtendedProvisionInfo(info))


class _RunningModeNotice(logging.Filter):
    """FnApiRunner warns that `in_memory` mode runs one worker when several are asked for; with
    the worker processes given as the environment, they do run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "direct_running_mode" not in record.getMessage()


def _quiet_running_mode_notice() -> None:
    beam_log = logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner")
    if not any(isinstance(f, _RunningModeNotice) for f in beam_log.filters):
        beam_log.addFilter(_RunningModeNotice())


def counters_of(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's `jestflow` counters (committed values where the runner has them)."""
    try:
        query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    except (NotImplementedError, AttributeError):
        return {}
    counters: Counter[str] = Counter()
    for counter in query["counters"]:
        counters[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return dict(sorted(counters.items()))
