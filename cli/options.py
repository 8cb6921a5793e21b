"""The command line's options, declared once and shared between commands. Each option's
parameter is named after the config field it fills, so a command builds its config with
`config_from(Config, params)` instead of spelling every option again; the choices read
`transforms/vocabulary.py`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click

from ..transforms.dedup.copies import DEDUP_METHODS, DedupConfig
from ..transforms.dedup.semantic import SemanticConfig
from ..transforms.errors import JestflowError
from ..transforms.models.documents import DEFAULT_SCORE_MAX_TOKENS
from ..transforms.models.losses import PAIR_LOSSES
from ..transforms.models.towers import ENCODERS
from ..transforms.records import FieldMap
from ..transforms.selection.jest import RELATIVE_TEMPERATURE
from ..transforms.vocabulary import METHODS, OFFLINE_MODES, ONLINE_MODES, TASKS

POSITIVE = click.IntRange(min=1)
FRACTION = click.FloatRange(0, 1, min_open=True)


INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C


class Group(click.Group):
    """A click group that turns JestflowError into `Error: <message>` and exit status 1, and
    Ctrl-C into one line and exit status 130 (a command may say more: `interrupted`)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except JestflowError as e:
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt:
            interrupted(f"Interrupted: jestflow {ctx.invoked_subcommand or ''} stopped".rstrip())


def interrupted(message: str) -> NoReturn:
    """End the command after Ctrl-C: `message` on stderr, exit status 130."""
    click.echo(message, err=True)
    sys.exit(INTERRUPTED)


@contextlib.contextmanager
def exit_on_ctrl_c(message: str, cleanup: Callable[[], object]) -> Iterator[None]:
    """Within the block, Ctrl-C runs `cleanup`, prints `message` and leaves at once with exit
    status 130 (os._exit). For the local Beam runner: a KeyboardInterrupt raised inside it runs
    its shutdown code, whose threads wait on workers, abort, or print tracebacks."""

    def leave(signum, frame) -> None:
        threading.excepthook = lambda args: None  # Beam's threads, as their workers go
        logging.disable(logging.CRITICAL)  # and the errors its gRPC planes log meanwhile
        cleanup()
        click.echo(message, err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)

    previous = signal.signal(signal.SIGINT, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def echo_next(commands: list[str]) -> None:
    """A command's closing lines: what to run next."""
    for i, command in enumerate(commands):
        click.echo(f"{'next:' if i == 0 else '':<6}{command}")


def options(*decorators):
    """Several click options as one decorator, in the order given."""
    return lambda func: functools.reduce(lambda f, option: option(f), reversed(decorators), func)


def config_from(cls, params: dict[str, Any], **given: Any):
    """A config dataclass from the command's parameters that name its fields (and `given`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names}, **given)


task_option = click.option(
    "--task",
    type=click.Choice(TASKS),
    required=True,
    help="lm: per-example language-model loss; contrastive: a two-tower model's pair loss.",
)
device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when there is one), cpu, cuda, cuda:1 …",
)
score_seq_len_option = click.option(
    "--score-seq-len",
    type=click.IntRange(min=0),
    help="lm: score only the first N tokens of each text, a cheaper pass that cannot see the rest "
    "of a document [default: the whole document, window by window, up to --score-max-tokens; "
    "train: what the shards' teacher scored].",
)
score_document_options = options(
    click.option(
        "--score-max-tokens",
        type=click.IntRange(min=1),
        default=DEFAULT_SCORE_MAX_TOKENS,
        show_default=True,
        help="lm, whole documents: tokens of each document scored at most; "
        "stats.json counts the longer ones.",
    ),
    click.option(
        "--score-window",
        type=click.IntRange(min=1),
        show_default="the model's context",
        help="lm, whole documents: tokens per scoring window.",
    ),
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace what --output already holds."
)
eval_option = click.option(
    "--eval", "eval_inputs", multiple=True, help="Held-out raw input(s) for the held-out loss."
)

# The built-in model's size (teacher train, train).
model_size_options = options(
    click.option("--d-model", type=click.IntRange(min=8), show_default="128", help="Model width."),
    click.option(
        "--layers", "n_layer", type=POSITIVE, show_default="2", help="Transformer blocks."
    ),
    click.option("--heads", "n_head", type=POSITIVE, show_default="4", help="Attention heads."),
    click.option(
        "--max-len",
        type=POSITIVE,
        show_default="lm 256, ngram 512, transformer 128",
        help="Tokens (bytes; ngram towers: characters) read per text.",
    ),
    click.option(
        "--text-tower",
        "text_encoder",
        type=click.Choice(ENCODERS["text"]),
        show_default="ngram",
        help="Contrastive text towers: a bag of hashed character n-grams, or a byte transformer.",
    ),
    click.option(
        "--image-tower",
        "image_encoder",
        type=click.Choice(ENCODERS["image"]),
        show_default="conv",
        help="Contrastive image tower: a small CNN, or a ViT.",
    ),
)

# The sampling temperature (curate, train, demo).
temperature_options = options(
    click.option(
        "--temperature",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        show_default="relative",
        help="An absolute τ: sampling ∝ exp(score / τ) (the paper: 1). Without it, τ "
        "is relative to the scores: see --relative-temperature.",
    ),
    click.option(
        "--relative-temperature",
        type=click.FloatRange(min=0, min_open=True),
        default=RELATIVE_TEMPERATURE,
        show_default=True,
        help="τ = this × the median absolute deviation of the scores drawn from (a "
        "super-batch, a chunk): equally sharp whatever the losses' scale.",
    ),
)

# JEST sampling (curate, train).
sampling_options = options(
    click.option(
        "--chunks",
        "n_chunks",
        type=POSITIVE,
        default=16,
        show_default=True,
        help="JEST blocked sampling: chunks drawn one after another (contrastive).",
    ),
    temperature_options,
)


def loss_option(default: str):
    """`--loss`: the contrastive pair loss (curate: what selection judges by; teacher train,
    train: what the model trains on); `default` says what it is when not given."""
    return click.option(
        "--loss",
        type=click.Choice(PAIR_LOSSES),
        default=None,
        show_default=default,
        help="Contrastive pair loss: sigmoid (SigLIP) or softmax (CLIP's InfoNCE).",
    )


# The optimizer's schedule (teacher train, train).
schedule_options = options(
    click.option(
        "--steps", type=POSITIVE, default=1000, show_default=True, help="Optimizer steps."
    ),
    click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        show_default="1e-3; 3e-5 for a Hugging Face --init",
        help="Peak learning rate (AdamW, warm-up then cosine).",
    ),
    click.option(
        "--warmup-steps",
        type=click.IntRange(min=0),
        default=50,
        show_default=True,
        help="Linear warm-up steps.",
    ),
)

# Where the payload is in an input record: filled into a FieldMap by `field_map`.
FIELD_PARAMS = (
    "text_field",
    "image_field",
    "caption_field",
    "query_field",
    "doc_field",
    "keep_field",
    "max_chars",
)
field_options = options(
    click.option(
        "--text-field", show_default="lm: text", help="Field (tar: extension) holding the text."
    ),
    click.option("--image-field", help="Field holding the encoded image (image-text pairs)."),
    click.option("--caption-field", help="Field holding the caption (image-text pairs)."),
    click.option("--query-field", help="Field holding the query (text-text pairs)."),
    click.option("--doc-field", help="Field holding the document (text-text pairs)."),
    click.option("--keep-field", multiple=True, help="Extra field carried along (e.g. a tag)."),
    click.option(
        "--max-chars",
        type=POSITIVE,
        default=100_000,
        show_default=True,
        help="Texts longer than this are rejected.",
    ),
)

# Curation's selection (curate): a SelectionConfig.
selection_options = options(
    click.option(
        "--keep",
        type=FRACTION,
        required=True,
        help="Fraction of each super-batch to keep, in (0, 1].",
    ),
    click.option(
        "--score",
        "mode",
        type=click.Choice(OFFLINE_MODES),
        show_default="learnability with --student, else easy_reference",
        help="Selection score.",
    ),
    sampling_options,
    click.option(
        "--method",
        type=click.Choice(METHODS),
        default="sample",
        show_default=True,
        help="Sample without replacement, or take the top scores.",
    ),
    click.option(
        "--seed", type=int, default=0, show_default=True, help="Super-batch grouping and sampling."
    ),
    loss_option("the teacher's"),
)

# Dedup before scoring (curate).
dedup_options = options(
    click.option(
        "--dedup",
        type=click.Choice(DEDUP_METHODS),
        show_default="near",
        help="Remove copies before scoring: exact (normalised content: texts, or image bytes "
        "and caption), near (texts: MinHash LSH on character shingles; image–text pairs: "
        "perceptual hashes of the image alone, with its colours) or none.",
    ),
    click.option(
        "--dedup-threshold",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=None,
        show_default="0.8 for texts, 0.875 for images",
        help="near: the similarity that makes two examples copies — texts: the Jaccard "
        "similarity of their shingle sets; images: the share of equal perceptual-hash bits "
        "(their colours must agree too).",
    ),
    click.option(
        "--semantic-dedup",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        metavar="COSINE",
        help="After scoring, remove semantic copies (SemDeDup): examples whose contrastive "
        "teacher embeddings have at least this cosine similarity (e.g. 0.95), within k-means "
        "clusters; the first copy is kept. Off by default.",
    ),
    click.option(
        "--semantic-clusters",
        type=POSITIVE,
        show_default="one per 1,000 examples, at most 1,024",
        help="Semantic dedup: k of k-means.",
    ),
)


def dedup_config(params: dict[str, Any]) -> DedupConfig:
    """The DedupConfig the dedup options give (removed from `params`)."""
    return DedupConfig(method=params.pop("dedup"), threshold=params.pop("dedup_threshold"))


def semantic_config(params: dict[str, Any]) -> SemanticConfig:
    """The SemanticConfig the semantic dedup options give (removed from `params`)."""
    return SemanticConfig(
        threshold=params.pop("semantic_dedup"), clusters=params.pop("semantic_clusters")
    )


mode_option = click.option(
    "--mode",
    type=click.Choice(ONLINE_MODES),
    default="learnability",
    show_default=True,
    help="How each step's sub-batch is chosen; uniform takes the first b (the baseline); "
    "weighted trains on the first b weighted by learnability (no scoring pass; τ: --temperature, "
    "else 1 × the spread of the batch's scores); curated_weights trains on the first b weighted "
    "by the soft weights curate wrote into each sample's json.",
)


def field_map(task: str, params: dict[str, Any]) -> FieldMap:
    """The FieldMap the field options give; lm (and a classifier) reads `text` when none is
    given."""
    given = {name: params.pop(name) for name in FIELD_PARAMS}
    text = given["text_field"]
    layouts = (
        text,
        given["image_field"],
        given["caption_field"],
        given["query_field"],
        given["doc_field"],
    )
    if not any(layouts):
        if task not in ("lm", "classifier"):
            raise JestflowError(
                "contrastive tasks need --query-field and --doc-field, "
                "or --image-field and --caption-field"
            )
        text = "text"
    return FieldMap(
        text=text,
        image=given["image_field"],
        caption=given["caption_field"],
        query=given["query_field"],
        doc=given["doc_field"],
        keep=tuple(given["keep_field"]),
        max_chars=given["max_chars"],
    )


def field_flags(fields: FieldMap | None) -> str:
    """The field options that give `fields` back (field_map's inverse): what a `next:` command
    reading the same kind of raw data needs; none for lm's default `text`."""
    if fields is None:
        return ""
    flags = {
        "--text-field": None if fields.text == "text" else fields.text,
        "--image-field": fields.image,
        "--caption-field": fields.caption,
        "--query-field": fields.query,
        "--doc-field": fields.doc,
    }
    return "".join(f" {flag} {value}" for flag, value in flags.items() if value)
