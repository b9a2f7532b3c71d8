"Shared pytest fixtures: the offline data mirror."
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mirror() -> Path:
    "The local mirror of public data (PARTAGES_MIRROR, else ../shared/data/mirror); skips when absent."
    path = Path(os.environ.get("PARTAGES_MIRROR") or REPO.parent / "shared" / "data" / "mirror")
    if not path.is_dir():
        pytest.skip(f"no data mirror at {path}; set PARTAGES_MIRROR")
    return path
