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
    """Path of the `ichkit` command: $ICHKIT_CLI, this checkout's .venv, its build tree, then PATH."""
    candidates = [os.environ.get("ICHKIT_CLI"), str(ROOT / ".venv" / "bin" / "ichkit"),
                  str(ROOT / "build" / "release" / "ichkit"), shutil.which("ichkit")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail("the ichkit command was not found; run scripts/setup first")
