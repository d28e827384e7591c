"""The command-line tests' store: the pipeline of ``cli_pipeline``, realized."""

from __future__ import annotations

import pytest

import nixlet as nx
from cli_pipeline import Built, realize_pipeline


@pytest.fixture
def built(store: nx.Store) -> Built:
    """The pipeline, realized in the test's store (the default store)."""
    return realize_pipeline(store)
