"""The project's real data, which tests reach as ``../shared/data`` beside the repository.

Only this repository's CI (and the developers' checkout) has that folder; the data is never shipped
or copied into the project. Everywhere else the tests that read it skip with the reason below, and
the rest of the suite runs on synthetic data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def missing_reason(path: Path) -> str:
    return (f"needs the project's real data at {path} (../shared beside the repository), "
            "present only in this repository's CI")


def needs(path: Path):
    """Skip marker for a test that reads ``path`` (a file or folder under SHARED_DATA)."""
    return pytest.mark.skipif(not path.exists(), reason=missing_reason(path))
