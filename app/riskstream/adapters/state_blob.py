"""An entity's state tensors as one byte string, sparse when that is shorter.

Most of a feature memory is zeros (empty hours of its ring buffers), so a state is stored as its
non-zero float32 values followed by their uint16 positions: ``vals[n] + idx[n]``, 6 bytes per
non-zero. A state with too few zeros for that to pay is stored dense (``4 * size`` bytes, every
float in manifest order), and only a dense blob has that length, so the length tells the
format. Either way the round trip is bit-exact: "zero" means all 32 bits are zero, so ``-0.0``
and NaN are kept as they are.

Redis spends its time per byte of a script's arguments and replies (about 4 µs per KB passed
through Lua on this project's machine), so the state's size sets much of the cost of a step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from riskstream.core.manifest import StateSpec

_MAX_SPARSE = 1 << 16  # positions are uint16


class StateBlob:
    def __init__(self, specs: Sequence[StateSpec]) -> None:
        self._specs = tuple(specs)
        self._sizes = [rows * cols for rows, cols in (spec.shape for spec in self._specs)]
        self.size = sum(self._sizes)  # floats
        self._dense_bytes = 4 * self.size
        self._sparse = self.size <= _MAX_SPARSE

    def encode(self, tensors: Mapping[str, np.ndarray]) -> bytes:
        flat = np.concatenate(
            [np.asarray(tensors[spec.name], np.float32).reshape(-1) for spec in self._specs]
        )  # (S,)
        if self._sparse:
            where = np.flatnonzero(flat.view(np.uint32))  # bit-exact: -0.0 is not zero
            if 0 < 6 * len(where) < self._dense_bytes:  # never empty: '' means "keep" to Redis
                return flat[where].tobytes() + where.astype(np.uint16).tobytes()
        return flat.tobytes()

    def decode(self, blob: bytes | None) -> dict[str, np.ndarray]:
        """The tensors by name; ``{}`` if there is no blob or it is of another shape.

        A blob of another model can have a length this one reads as sparse; the engine never
        uses a state whose model version differs from its own, so that is not relied on here.
        """
        if not blob:
            return {}  # none yet
        if len(blob) == self._dense_bytes:
            flat = np.frombuffer(blob, dtype=np.float32)
        elif self._sparse and len(blob) % 6 == 0 and len(blob) < self._dense_bytes:
            n = len(blob) // 6
            where = np.frombuffer(blob, dtype=np.uint16, count=n, offset=4 * n)
            if n and int(where.max()) >= self.size:
                return {}
            flat = np.zeros(self.size, dtype=np.float32)
            flat[where] = np.frombuffer(blob, dtype=np.float32, count=n)
        else:
            return {}  # made by a model of another shape: the engine starts afresh
        tensors, start = {}, 0
        for spec, size in zip(self._specs, self._sizes):
            tensors[spec.name] = flat[start : start + size].reshape(spec.shape)  # (L, H)
            start += size
        return tensors
