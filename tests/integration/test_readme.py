"""The README's scoring examples work in the order a new user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.service import Running

README = Path(__file__).resolve().parents[2] / "README.md"
_EXAMPLE = re.compile(
    r"curl -s -X POST localhost:8000(/v1/entities/\S+/events) .*?-d '(\{.*?\})'", re.S
)


async def test_the_readme_single_event_examples_are_each_scored(service: Running) -> None:
    examples = _EXAMPLE.findall(README.read_text())
    assert len(examples) >= 2
    for step, (path, body) in enumerate(examples, start=1):
        response = await service.client.post(path, json=json.loads(body))
        assert response.status_code == 200, (body, response.text)
        assert response.json()["step"] == step
