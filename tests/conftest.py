"""Fixtures shared by every test file. Plain helpers (free_port, at, rules) are in tests.helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test, nor a gateway it starts, writes under the real ~/.local/state: `pulse-gateway
    run` without -c keeps the demo's state in $XDG_STATE_HOME, here a directory of this run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        yield


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty XDG_STATE_HOME for this test; where the demo's state goes below it is
    ``state_home / "pulse-gateway" / "demo"``."""
    home = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home
