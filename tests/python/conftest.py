import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def data_dir():
    return DATA


@pytest.fixture(scope="session")
def cli():
    """Path of the `ichkit` command: $ICHKIT_CLI, then PATH, then the default build tree."""
    candidates = [os.environ.get("ICHKIT_CLI"), shutil.which("ichkit"), str(ROOT / "build" / "release" / "ichkit")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail("the ichkit command was not found; run scripts/setup first")
