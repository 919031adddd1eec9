"""Shared fixtures: every decoder test runs once per available engine (ids ``py`` / ``cy``)."""
from __future__ import annotations

import pytest
from captcha_edge.decoder import ENGINES

_IDS = {"python": "py", "cython": "cy"}


@pytest.fixture(params=list(ENGINES), ids=[_IDS.get(name, name) for name in ENGINES])
def engine(request: pytest.FixtureRequest) -> str:
    """Name of a decoder engine: ``"python"``, plus ``"cython"`` when the extension is built."""
    return str(request.param)
