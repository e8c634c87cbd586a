"""The floor plan holds: imports only go down the layers, and no package's modules import in a cycle.

The contracts are in pyproject.toml `[tool.importlinter]` (docs/architecture.md "Layers and
packages"); this runs import-linter on them.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_every_code_package_is_in_a_layer() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    top_level = {p.split(".")[0] for p in packages}
    contracts = config["tool"]["importlinter"]
    assert set(contracts["root_packages"]) == top_level
    layered = {name.strip() for layer in contracts["contracts"][0]["layers"] for name in layer.split("|")}
    for package in top_level - {"clickstream"}:
        assert package in layered, f"{package} is in no layer"
    clickstream_modules = {p.stem for p in (ROOT / "clickstream").glob("*.py")} - {"__init__"}
    assert {f"clickstream.{m}" for m in clickstream_modules} | {"clickstream.core"} <= layered
