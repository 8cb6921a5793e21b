"""The output folder of a command that writes a model (`teacher train`, `teacher calibrate`,
`teacher promote`, `train`): one rule and one message for all of them. A folder that holds
anything is refused unless `overwrite`, naming what it holds; with `overwrite` its old contents
are removed when the command writes (`clear`), so nothing stale stays beside the new model."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from ..transforms.errors import JestflowError
from ..transforms.formats.model_files import CONFIG
from ..transforms.formats.run_folder import STARTED, SUCCESS
from ..transforms.paths import filesystem, within, writable_directory
from .checkpoints import LOG, STATE

# What a folder's entries say it holds, checked in this order.
HOLDINGS = (
    ("a training run", {STATE, LOG}),
    ("a curation run", {SUCCESS, STARTED}),
    ("a model checkpoint", {CONFIG}),
)
TRAINING_RUN = HOLDINGS[0][0]


def claim(
    output: str, *, overwrite: bool, resumable: bool = False, inputs: Sequence[str | None] = ()
) -> list[str]:
    """Create `output` (any fsspec URL) and return the paths it holds, to be replaced (`clear`)
    once the command writes; a folder that holds anything is refused unless `overwrite`, and
    always when it holds one of the command's `inputs` (data, models). `resumable`: the command
    could continue a training run there (`train --resume`), and the message says so."""
    fs, root = writable_directory(output)
    held = sorted(fs.ls(root, detail=False))
    inside = [url for url in inputs if url and held and within(url, output)]
    if inside:
        raise JestflowError(
            f"--output {output} holds this command's input {inside[0]}; pick another --output"
        )
    if held and not overwrite:
        names = [posixpath.basename(path.rstrip("/")) for path in held]
        kind = holding(names)
        shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
        resume = "--resume it, " if resumable and kind == TRAINING_RUN else ""
        raise JestflowError(
            f"{output} already holds {kind} ({shown}); {resume}pass --overwrite to replace it, "
            "or pick a new --output"
        )
    return held


def holding(names: list[str]) -> str:
    """What a folder with these entries holds, in words."""
    return next((kind for kind, marks in HOLDINGS if marks & set(names)), "files")


def clear(output: str, held: list[str]) -> None:
    """Remove what `claim` found (nothing unless `overwrite`)."""
    fs, _ = filesystem(output)
    for path in held:
        fs.rm(path, recursive=True)
