import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "tasks"


def shared_data_dir() -> Path:
    """../shared/data next to the repo, or $COWEST_SHARED_DATA."""
    env = os.environ.get("COWEST_SHARED_DATA")
    return Path(env) if env else REPO / ".." / "shared" / "data"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared task data not found at {path} (set COWEST_SHARED_DATA)")
    return path
