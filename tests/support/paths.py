"""Where the source checkout is: the working directory of the server processes tests start."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
