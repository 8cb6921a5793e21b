"""Corpora and tiny models shared by the pipeline tests, made once per session."""

from __future__ import annotations

import pytest
from corpora import make_images, make_noisy, make_pairs


@pytest.fixture(scope="session")
def noisy(tmp_path_factory):
    return make_noisy(tmp_path_factory.mktemp("noisy"))


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    return make_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("images"))
