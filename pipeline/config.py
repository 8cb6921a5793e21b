"""The curation job's config (`CurateConfig`, what the CLI fills) and what preparing a run found
(`RunPlan`): the job's graph is built from these two alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..transforms.dedup.copies import DedupConfig
from ..transforms.dedup.semantic import SemanticConfig
from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import checkpoint_task
from ..transforms.formats.run_folder import TEMPORARY
from ..transforms.models.documents import DEFAULT_SCORE_MAX_TOKENS, LmScoring
from ..transforms.models.scoring import scoring_length
from ..transforms.paths import child
from ..transforms.records import FieldMap
from ..transforms.selection.offline import SelectionConfig, kept_count
from ..transforms.vocabulary import PAIR_SCORE_MODES, TASKS, check_choice


@dataclass(frozen=True, kw_only=True)
class CurateConfig:
    """What `jestflow curate` runs: the inputs, the models, scoring, selection, dedup and the
    shards; the CLI fills it (option names follow the fields)."""

    inputs: tuple[str, ...]
    output: str
    teacher: str
    task: str
    fields: FieldMap
    selection: SelectionConfig
    dedup: DedupConfig = field(default_factory=DedupConfig)  # before scoring
    semantic: SemanticConfig = field(default_factory=SemanticConfig)  # after scoring (contrastive)
    student: str | None = None  # learnability offline: ℓ(student) − ℓ(teacher)
    # lm: more teachers beside `teacher` (an ensemble), combined by `selection.teacher_weights`
    teachers: tuple[str, ...] = ()
    # lm: the models score only the first N tokens of each text, a cheaper pass (None or 0: the
    # whole document, window by window, up to score_max_tokens)
    score_seq_len: int | None = None
    super_batch: int = 1024
    tiers: int = 1
    shard_max_count: int = 10_000
    shard_max_bytes: int = 1 << 30
    device: str = "auto"
    model_copies: int | None = None  # models per worker process (RunInference)
    large_model: bool = False  # share one model across a worker's processes
    workers: int = 2  # local runner processes
    torch_threads: int | None = None  # per worker process; run_curation fills it for local runs
    overwrite: bool = False  # replace a completed run in the output
    cache: str | None = None  # score cache URL: models' outputs by (example id, fingerprint)
    accelerator: str | None = None  # Beam resource hint for the scoring step, e.g. a GPU
    # lm, whole documents (score_seq_len unset): tokens per scoring window (None: the model's
    # context), and tokens scored per document at most
    score_window: int | None = None
    score_max_tokens: int = DEFAULT_SCORE_MAX_TOKENS
    beam_args: tuple[str, ...] = ()  # options for Beam: --runner=DataflowRunner, --project=…

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        scoring_length(self.task, self.score_seq_len)  # checks the option
        self._check_documents()
        if self.semantic.enabled and self.task != "contrastive":
            raise JestflowError(
                "semantic dedup compares the teacher's embeddings: it needs a contrastive "
                f"teacher (task contrastive, a two-tower model), and a {self.task} teacher gives "
                "losses; leave semantic.threshold unset"
            )
        if self.super_batch < 2:
            raise JestflowError(f"super_batch must be at least 2, not {self.super_batch}")
        if self.tiers < 1:
            raise JestflowError(f"tiers must be at least 1, not {self.tiers}")
        self._check_models()
        if self.selection.mode in PAIR_SCORE_MODES and self.task != "contrastive":
            raise JestflowError(f"{self.selection.mode} scores pairs: it needs --task contrastive")
        if self.selection.mode == "learnability" and self.student is None:
            raise JestflowError("learnability scores need a student checkpoint: student is not set")
        if self.selection.mode != "learnability" and self.student is not None:
            raise JestflowError(
                f"a student is only used by learnability scores, not {self.selection.mode}"
            )

    def _check_models(self) -> None:
        allowed = (self.task, "classifier") if self.task == "lm" else (self.task,)
        tasks = {role: checkpoint_task(path) for role, path in self.models.items()}
        for role, path in self.models.items():
            task = tasks[role]
            if task is not None and task not in allowed:
                raise JestflowError(f"{role} {path} is a {task} model, not {self.task}")
            if role == "student" and task == "classifier":
                raise JestflowError(f"student {path} is a classifier: a student is an lm model")
        if self.teachers and self.task != "lm":
            raise JestflowError(
                "several teachers are combined per example (lm pools); a contrastive pool is "
                "scored by one teacher"
            )
        weights = self.selection.teacher_weights
        if weights and len(weights) != 1 + len(self.teachers):
            raise JestflowError(
                f"teacher_weights gives {len(weights)} weights for {1 + len(self.teachers)} teachers"
            )
        if self.student is not None and tasks["teacher"] == "classifier":
            raise JestflowError(
                f"learnability compares the student's loss with an lm teacher's, and teacher "
                f"{self.teacher} is a classifier: give the lm teacher first (teacher), the "
                "classifier among the others (teachers)"
            )

    @property
    def models(self) -> dict[str, str]:
        """role → checkpoint: `teacher`, the others `teacher_2`, `teacher_3` …, and `student`."""
        roles = {"teacher": self.teacher}
        roles |= {f"teacher_{i}": path for i, path in enumerate(self.teachers, start=2)}
        return roles | ({} if self.student is None else {"student": self.student})

    def _check_documents(self) -> None:
        whole = self.task == "lm" and self.scoring_length is None
        given = self.score_window is not None or self.score_max_tokens != DEFAULT_SCORE_MAX_TOKENS
        if given and not whole:
            raise JestflowError(
                "score_window and score_max_tokens are for lm models scoring whole documents, "
                "not with score_seq_len (the first tokens)"
            )
        if self.score_window is not None and self.score_window < 1:
            raise JestflowError(f"score_window must be at least 1, not {self.score_window}")
        if self.score_max_tokens < 1:
            raise JestflowError(f"score_max_tokens must be at least 1, not {self.score_max_tokens}")

    @property
    def lm_scoring(self) -> LmScoring | None:
        """What an lm model scores of each text (None: not an lm task)."""
        if self.task != "lm":
            return None
        return LmScoring(
            prefix=self.scoring_length, window=self.score_window, max_tokens=self.score_max_tokens
        )

    @property
    def dedup_method(self) -> str:
        return self.dedup_settings.method

    @property
    def dedup_settings(self) -> DedupConfig:
        """The dedup config for the inputs' layout: method and threshold filled in."""
        return self.dedup.resolved(self.fields.layout)

    @property
    def scoring_length(self) -> int | None:
        """The tokens of each text an lm model scores (None: all of them)."""
        return scoring_length(self.task, self.score_seq_len)

    @property
    def super_batches_per_group(self) -> int:
        """Super-batches whose selected examples share a shard (about shard_max_count per tier)."""
        per_super_batch = kept_count(self.super_batch, self.selection.keep)
        return max(1, self.shard_max_count * self.tiers // per_super_batch)


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """What `prepare_run` found and did: the graph is built from it and the config alone."""

    output: str  # the run folder
    urls: list[str]  # the input files, sorted: their index names their dead-letter parts
    fingerprints: dict[str, str]  # role (teacher, teacher_2 …, student) → model fingerprint
    record: dict[str, Any]  # run.json's start: created, versions, runner, options, inputs, models
    started: float  # time.time() at preparation, for the run's timing
    lm_scoring: LmScoring | None = None  # lm: what the models score of each text
    teacher_tokens: str | None = None  # lm, whole documents: how the teacher cuts text (windows)
    pair_loss: str | None = None  # contrastive: the pair loss selection judged by
    classifiers: tuple[str, ...] = ()  # the roles whose model is a classifier

    @property
    def scoring_length(self) -> int | None:
        """lm: the first tokens of each text the models score (None: the whole document)."""
        return None if self.lm_scoring is None else self.lm_scoring.prefix

    @property
    def temporary(self) -> str:
        """The run's spill folder (deleted once `_SUCCESS` is written)."""
        return child(self.output, TEMPORARY)

    @property
    def cache_keys(self) -> dict[str, str]:
        """role → the score cache's folder for its outputs: the fingerprint, with what an lm
        model scores of each text (`LmScoring.cache_suffix`; a classifier reads its own)."""
        suffix = "" if self.lm_scoring is None else self.lm_scoring.cache_suffix
        return {
            role: fp + ("" if role in self.classifiers else suffix)
            for role, fp in self.fingerprints.items()
        }

    @property
    def shard_info(self) -> dict[str, Any]:
        """What every selected sample's json says of the models: role → fingerprint, and the
        tokens they scored (`score_seq_len`, lm only) or, for whole documents, how the teacher cut
        them into tokens (`teacher_tokens`): the online trainer checks both; for pairs, the pair
        loss selection judged by (`pair_loss`), the online trainer's default; `teacher_task:
        classifier` where the teacher is a classifier (its `teacher_loss` is −log-odds, not an
        LM loss the student's can be compared with)."""
        length = {} if self.scoring_length is None else {"score_seq_len": self.scoring_length}
        tokens = {} if self.teacher_tokens is None else {"teacher_tokens": self.teacher_tokens}
        loss = {} if self.pair_loss is None else {"pair_loss": self.pair_loss}
        task = {"teacher_task": "classifier"} if "teacher" in self.classifiers else {}
        return {**self.fingerprints, **length, **tokens, **loss, **task}


def options_of(config: CurateConfig) -> dict[str, Any]:
    options = dataclasses.asdict(config)
    options["fields"] = {k: v for k, v in options["fields"].items() if v not in (None, ())}
    return options
