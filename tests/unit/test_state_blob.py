"""The state blob's encoding: bit-exact both ways, sparse only when that is shorter."""

from __future__ import annotations

import numpy as np
import pytest
from riskstream.adapters.state_blob import StateBlob
from riskstream.core.manifest import StateSpec

SPECS = [StateSpec(name="h", shape=(2, 4)), StateSpec(name="m", shape=(1, 40))]


def tensors(rng: np.random.Generator, nonzero: float) -> dict[str, np.ndarray]:
    out = {}
    for spec in SPECS:
        t = rng.normal(size=spec.shape).astype(np.float32)
        t[rng.random(spec.shape) >= nonzero] = 0.0
        out[spec.name] = t
    return out


def bits(t: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {k: v.tobytes() for k, v in t.items()}


@pytest.mark.parametrize("nonzero", [0.05, 0.3, 0.9, 1.0])
def test_round_trip_is_bit_exact_and_never_longer_than_dense(nonzero: float) -> None:
    blob = StateBlob(SPECS)
    state = tensors(np.random.default_rng(1), nonzero)
    state["m"][0, :3] = [-0.0, np.nan, np.inf]  # kept as they are: -0.0 is not zero
    encoded = blob.encode(state)
    assert len(encoded) <= 4 * blob.size
    decoded = blob.decode(encoded)
    assert bits(decoded) == bits(state)
    assert {k: v.shape for k, v in decoded.items()} == {s.name: s.shape for s in SPECS}


def test_sparse_when_mostly_zeros_dense_when_not() -> None:
    blob = StateBlob(SPECS)
    rng = np.random.default_rng(2)
    sparse = tensors(rng, 0.1)
    n = sum(int(np.count_nonzero(v.view(np.uint32))) for v in sparse.values())
    assert len(blob.encode(sparse)) == 6 * n
    assert len(blob.encode(tensors(rng, 1.0))) == 4 * blob.size


def test_an_all_zero_state_is_stored_dense_never_empty() -> None:
    blob = StateBlob(SPECS)
    zeros = {s.name: np.zeros(s.shape, np.float32) for s in SPECS}
    encoded = blob.encode(zeros)
    assert encoded == bytes(4 * blob.size)
    assert bits(blob.decode(encoded)) == bits(zeros)


def test_dense_blobs_written_before_sparse_storage_still_decode() -> None:
    blob = StateBlob(SPECS)
    state = tensors(np.random.default_rng(3), 0.1)
    legacy = b"".join(state[s.name].tobytes() for s in SPECS)
    assert bits(blob.decode(legacy)) == bits(state)


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"\x00" * 7, b"\x00" * (4 * 48 + 4), np.float32(1).tobytes() + b"\xff\xff"],
    ids=["missing", "empty", "odd length", "longer than dense", "position out of range"],
)
def test_a_blob_of_another_shape_decodes_to_no_state(raw: bytes | None) -> None:
    assert StateBlob(SPECS).decode(raw) == {}


def test_a_state_too_large_for_uint16_positions_is_stored_dense() -> None:
    blob = StateBlob([StateSpec(name="m", shape=(1, 70_000))])
    state = {"m": np.zeros((1, 70_000), np.float32)}
    state["m"][0, 69_999] = 1.0  # a position past 65,535
    encoded = blob.encode(state)
    assert len(encoded) == 4 * 70_000
    assert bits(blob.decode(encoded)) == bits(state)
