"""Shared fixtures. The package is installed editable: tests just ``import cowest``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny seeded random Llama + tokenizer with a chat template, built once per session."""
    from support.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))
