"""What the wheel carries: every package under gateway/, and the configs of config/.

pyproject.toml lists the packages by hand (gateway.configs is the config/ folder, which no
package search finds), so these tests catch a new subpackage or config that the list misses.
The wheel itself is built, installed and run by .ci/wheel-smoke.
"""

from __future__ import annotations

import tomllib
from typing import Any

from tests.helpers import ROOT


def setuptools_table() -> dict[str, Any]:
    """pyproject.toml's [tool.setuptools] table."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table: dict[str, Any] = pyproject["tool"]["setuptools"]
    return table


def test_every_package_under_gateway_is_in_the_wheel() -> None:
    """pyproject.toml lists each directory of gateway/ with an __init__.py, and gateway.configs."""
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "gateway").rglob("__init__.py")
    }
    assert set(setuptools_table()["packages"]) == found | {"gateway.configs"}


def test_gateway_configs_is_the_config_folder_with_all_its_yaml() -> None:
    """gateway.configs maps to config/ and its package data names every YAML file there."""
    table = setuptools_table()
    assert table["package-dir"] == {"gateway.configs": "config"}
    shipped = set(table["package-data"]["gateway.configs"])
    assert shipped == {path.name for path in (ROOT / "config").glob("*.yaml")}
