"""The one exception type for bad user input (missing files, wrong fields, bad options).

The CLI turns it into a one-line error and a non-zero exit; anything else is a bug.
Bad *records* are never exceptions: they become `records.Rejected` values.
"""


class JestflowError(Exception):
    """A problem with the user's input or options, explained in one line."""


def missing_extra(extra: str, package: str) -> JestflowError:
    """The error for an optional dependency that is not installed."""
    return JestflowError(
        f"this needs the optional package {package!r}: install jestflow's {extra!r} extra "
        f"(in a clone: pip install -e '.[{extra}]')"
    )
