"""requirements.lock: the whole development environment pinned (every extra), what `make setup`
installs. pyproject.toml keeps ranges for people who `pip install` the package; the lock must
satisfy them, and the environment the tests run in must be the lock's (`make test-latest` runs
them on the newest versions instead and sets JESTFLOW_UNLOCKED)."""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Left out of the lock on purpose: torch's build (CPU, CUDA) is the Makefile's TORCH, and jestflow
# is the package itself.
UNLOCKED = {"torch", "jestflow"}


def pins() -> dict[str, str]:
    found = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line).groups()
            found[canonicalize_name(name)] = version
    return found


def requirements() -> list[Requirement]:
    """Every requirement of the package and of each extra, the self-references left out."""
    wanted = [*PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        wanted += extra
    return [r for r in map(Requirement, wanted) if canonicalize_name(r.name) not in UNLOCKED]


def test_the_lock_pins_every_requirement_of_every_extra_within_its_range():
    locked = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside {requirement}: `make lock`"
        )


def test_the_lock_leaves_out_torch_and_names_no_machine():
    text = LOCK.read_text()
    assert not UNLOCKED & set(pins())
    assert not re.search(r"^(-[-a-z]|\S+ @ )", text, flags=re.M)  # no index, find-links, paths
    assert "make lock" in text.splitlines()[4]  # pip-compile's header names how it was made


def test_the_makefile_installs_the_lock_with_every_extra():
    makefile = (ROOT / "Makefile").read_text()
    (extras,) = re.findall(r"^EXTRAS := (\S+)$", makefile, flags=re.M)
    assert set(extras.split(",")) == set(PROJECT["optional-dependencies"])
    assert '$(BIN)/pip install -q "$(TORCH)" -r $(LOCK)' in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile


@pytest.mark.skipif("JESTFLOW_UNLOCKED" in os.environ, reason="make test-latest: newest versions")
def test_this_environment_is_the_lock():
    drift = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drift[name] = (version, installed)
    assert not drift, (
        f"installed versions differ from requirements.lock (locked, installed): {drift}"
    )
