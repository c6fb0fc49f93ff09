"""Shared phantom fixtures: a small cohort in memory and one small site on disk (generated once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.phantom import PROFILES, PhantomCase, synth_case, write_site

COHORT_PER_PROFILE = 12


@pytest.fixture(scope="session")
def cohort() -> dict[str, list[PhantomCase]]:
    """12 patients per profile (about 4 s in all)."""
    return {
        name: [synth_case((5, i), profile) for i in range(COHORT_PER_PROFILE)] for name, profile in PROFILES.items()
    }


@pytest.fixture(scope="session")
def trauma_site(tmp_path_factory) -> Path:
    """A written young-trauma site (rows stored bottom-up): 6 labelled + 2 unlabelled; its manifest path."""
    return write_site(tmp_path_factory.mktemp("site") / "trauma", "trauma", "young-trauma", 6, 2, seed=9)
