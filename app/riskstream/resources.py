"""Files the service ships beside its code: the migrations, the default model, the demo's data.

The design keeps them in the project's own folders (``migrations/``, ``models/aki-lstm/1.2.0/``,
``models/data/``). A wheel carries copies under ``riskstream/_bundled/`` (``hatch_build.py``),
so an installed service finds them through its package; a source checkout (editable install, or
the tests) reads them where they live. Settings still override the model.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = Path(__file__).resolve().parent / "_bundled"
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# name under _bundled/ -> where a source checkout keeps it (read by hatch_build.py for the wheel).
LOCATIONS = {
    "migrations": "migrations",
    "model": "models/aki-lstm/1.2.0",
    "demo": "models/data",
}


def resource(name: str) -> Path:
    """The folder ``name`` of ``LOCATIONS``: the wheel's copy if installed, else the checkout's."""
    packaged = BUNDLED / name
    if packaged.is_dir():
        return packaged
    return SOURCE_ROOT / LOCATIONS[name]
