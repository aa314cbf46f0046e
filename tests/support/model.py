"""The small model artifact the service tests run on (made by models/, committed as a fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_MODEL_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "tiny" / "0.1.0"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    assert (TINY_MODEL_DIR / "model.onnx").is_file(), f"missing test model in {TINY_MODEL_DIR}"
    return TINY_MODEL_DIR
