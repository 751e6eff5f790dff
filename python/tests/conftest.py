import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared():
    """The team's shared data beside the checkout (../shared), as the C++ tests read it."""
    path = pathlib.Path(os.environ.get("LOWBIT_SHARED_DIR", ROOT.parent / "shared"))
    if not path.is_dir():
        pytest.fail(f"no shared data at {path}")
    return path


@pytest.fixture(scope="session")
def cli():
    """The `lowbit` command of the same build (LOWBIT_CLI, or build/lowbit beside the checkout's sources)."""
    path = pathlib.Path(os.environ.get("LOWBIT_CLI", ROOT / "build" / "lowbit"))
    if not path.is_file():
        pytest.fail(f"no lowbit command at {path} (build the 'lowbit' target or set LOWBIT_CLI)")
    return path
