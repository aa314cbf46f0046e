"""The manifest half of the model contract (docs/model-contract.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from riskstream.core.errors import ModelContractError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class FeatureSpec(_Open):
    name: str = Field(min_length=1)
    unit: str | None = None
    description: str | None = None
    # [low, high], inclusive: the plausible values of the feature. The service refuses a value
    # outside it (422) instead of feeding the model an input it never saw (a unit mix-up, a typo).
    range: tuple[float, float] | None = None

    @field_validator("range")
    @classmethod
    def _plausible(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            low, high = value
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError(f"range {list(value)} must be finite numbers")
            if not low < high:
                raise ValueError(f"range {list(value)} must be [low, high] with low < high")
        return value


class OutputSpec(_Open):
    name: str = Field(min_length=1)
    horizon_hours: float | None = None
    description: str | None = None


class StateSpec(_Open):
    name: str = Field(min_length=1)
    shape: tuple[int, int]  # (L, H); the graph takes (L, B, H)


class Manifest(_Open):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    outputs: tuple[OutputSpec, ...] = Field(min_length=1)
    states: tuple[StateSpec, ...] = Field(min_length=1)
    # Optional: how far back an entity's events still shape its state, in hours. A replay
    # (``riskstream.core.replay``) then steps only the events within it, from all-zero states.
    memory_horizon_hours: float | None = Field(None, gt=0)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def as_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_manifest(model_dir: Path) -> Manifest:
    path = model_dir / "manifest.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelContractError(f"no manifest.json in {model_dir}") from exc
    except json.JSONDecodeError as exc:
        raise ModelContractError(f"{path} is not JSON: {exc}") from exc
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        raise ModelContractError(f"{path} does not follow the model contract: {exc}") from exc
    for kind, names in (
        ("feature", manifest.feature_names),
        ("output", manifest.output_names),
        ("state", tuple(s.name for s in manifest.states)),
    ):
        if len(set(names)) != len(names):
            raise ModelContractError(f"{path}: duplicate {kind} names")
    return manifest
