"""The entity view says why the risk moved (issue 14): a selected event's explanation, features by
their manifest descriptions and units, the trend's unit, an honest count, the model serving.
Headless Debian Chromium against a real ``riskstream serve`` (the shipped model)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_dashboard import VIEWPORT, WAIT_MS, browser_test, iso, post, save
from tests.support.server import ServerProcess

try:
    from playwright import sync_api
except ImportError:
    sync_api = None

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ENTITY = "bed-21"
STABLE = {"HR": 88, "MAP": 75, "Temp": 37.1, "BUN": 20, "Creatinine": 1.0}
ADMISSION = {"Gender": 1, "Age": 67, "HospAdmTime": -12.5, "ICULOS": 1}


def stay(server: ServerProcess) -> None:
    """Six stable hours, then a creatinine jump with all else the same; logged before we look."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=7)
    events: list[dict[str, Any]] = [
        {
            "entity_id": ENTITY,
            "event_id": f"h{k}",
            "time": iso(start + timedelta(hours=k)),
            "values": {**STABLE, **(ADMISSION if k == 0 else {"ICULOS": k + 1})},
        }
        for k in range(6)
    ]
    events.append(
        {
            "entity_id": ENTITY,
            "event_id": "h6",
            "time": iso(start + timedelta(hours=6)),
            "values": {**STABLE, "Creatinine": 4.0, "ICULOS": 7},
        }
    )
    post(server, events)
    deadline = time.monotonic() + 20
    while True:  # the outbox drains into SQL shortly after: poll the log, not a clock
        page = httpx.get(f"{server.url}/v1/entities/{ENTITY}/scores", headers=server.headers).json()
        if len(page["scores"]) == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(page["scores"]) == 7


def effects(page: Any, output: str) -> list[str]:
    features: list[str] = page.eval_on_selector_all(
        f'#explain-body section.why[data-output="{output}"] li.effect',
        "items => items.map(li => li.dataset.feature)",
    )
    return features


@browser_test
def test_a_selected_event_shows_why_its_risk_moved(server: ServerProcess, tmp_path: Path) -> None:
    stay(server)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server.url}/ui/#entity={ENTITY}&key={server.key}")
            page.wait_for_selector("#charts figure.chart circle.pt", timeout=WAIT_MS)

            # the header: the model serving and its state; the count is a count
            assert " ".join(page.inner_text("#model").split()) == "model aki-lstm 1.2.0 active"
            assert page.get_attribute("#model .model-entry", "data-role") == "active"
            assert page.inner_text("#wl-count") == "1 entity"
            # the trend has its unit
            assert page.inner_text(f'#watchlist-body tr[data-entity="{ENTITY}"] td.trend').endswith(
                "pts"
            )

            # the latest event (the creatinine jump) is selected; its explanation ranks it first
            assert "step 7 " in page.inner_text("#event-title")
            page.wait_for_selector(
                '#explain-body[data-step="7"][data-state="ready"]', timeout=WAIT_MS
            )
            assert "Why did the risk move at step 7?" in page.inner_text("#explain-title")
            aki = effects(page, "aki_48h")
            assert aki[0] == "Creatinine"
            assert sorted(aki) == sorted([*STABLE, "ICULOS"])
            first = page.locator('section.why[data-output="aki_48h"] li.effect').first
            assert first.locator(".effect-value").inner_text() == "4 mg/dL"
            assert first.locator(".effect-points").inner_text().startswith("+")
            assert "effect up" in (first.get_attribute("class") or "")
            moved = page.inner_text('section.why[data-output="aki_48h"] .moved')
            assert "→" in moved and "pts" in moved
            # the same numbers as the API
            api = httpx.get(
                f"{server.url}/v1/entities/{ENTITY}/scores/7/explanation",
                headers=server.headers,
            ).json()
            assert [i["feature"] for i in api["outputs"]["aki_48h"]["inputs"]] == aki
            save(page, tmp_path, "explanation.png")

            # the first event: features by the manifest's words and units, coded values in words
            page.locator("#charts figure.chart").first.locator("circle.pt").first.click()
            assert "step 1 " in page.inner_text("#event-title")
            hosp = page.locator('#values-body tr[data-feature="HospAdmTime"]')
            assert (
                hosp.locator("th")
                .inner_text()
                .startswith("Hours between hospital admission and ICU admission")
            )
            assert hosp.locator("td.unit").inner_text() == "hours"
            los = page.locator('#values-body tr[data-feature="ICULOS"]')
            assert los.locator("th").inner_text().startswith("ICU length of stay")
            gender = page.locator('#values-body tr[data-feature="Gender"]')
            assert gender.locator("td.num").inner_text() == "Male"
            temp = page.locator('#values-body tr[data-feature="Temp"]')
            assert temp.locator("td.unit").inner_text() == "°C"
            # and its explanation: a first score, nothing before it
            page.wait_for_selector(
                '#explain-body[data-step="1"][data-state="ready"]', timeout=WAIT_MS
            )
            assert "first score" in page.inner_text('section.why[data-output="aki_48h"] .moved')
            assert errors == []
        finally:
            browser.close()
