"""Puts the files the service needs beside its code into the wheel (not into an editable install).

``riskstream.resources.LOCATIONS`` names them once; a built wheel carries each under
``riskstream/_bundled/<name>``. An editable install reads them from the checkout instead.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _locations(root: Path) -> dict[str, str]:
    """``LOCATIONS`` read from the module's source, without importing the package."""
    tree = ast.parse((root / "app" / "riskstream" / "resources.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LOCATIONS":
            value: dict[str, str] = ast.literal_eval(node.value)
            return value
    raise RuntimeError("riskstream/resources.py defines no LOCATIONS")


class BundledFiles(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        for name, source in _locations(root).items():
            build_data["force_include"][str(root / source)] = f"riskstream/_bundled/{name}"
