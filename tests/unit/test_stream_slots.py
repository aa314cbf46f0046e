"""The caps on open SSE streams per key and per process (``riskstream.web.auth.StreamSlots``)."""

from __future__ import annotations

import pytest
from riskstream.core.errors import RateLimited, Unavailable
from riskstream.web.auth import StreamSlots


def test_per_key_then_per_process_and_slots_come_back() -> None:
    slots = StreamSlots(per_key=2, per_process=3, retry_after=2)
    slots.take("a")
    slots.take("a")
    with pytest.raises(RateLimited) as over:
        slots.take("a")
    assert over.value.retry_after == 2
    slots.take("b")
    with pytest.raises(Unavailable):
        slots.take("c")
    slots.give_back("a")
    slots.take("a")
    assert slots.total == 3


def test_without_keys_only_the_process_cap_applies() -> None:
    slots = StreamSlots(per_key=1, per_process=3, retry_after=2)
    for _ in range(3):
        slots.take(None)
    with pytest.raises(Unavailable):
        slots.take(None)
