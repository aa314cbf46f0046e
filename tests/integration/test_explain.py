"""GET /v1/entities/{id}/scores/{step}/explanation on a real Redis, a real SQL database and the
shipped model (aki-lstm 1.2.0: the tiny test model has no clinical sense of creatinine)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from riskstream.core.domain import LoggedScore, Score
from riskstream.settings import DEFAULT_MODEL_DIR, Settings

from tests.support.service import Running, wait_logged

HOUR = 3600
T0 = 1_795_597_200  # 2026-11-25T09:00:00Z
VITALS = {"HR": 88.0, "MAP": 75.0, "Temp": 37.1, "Resp": 18.0, "BUN": 20.0, "Potassium": 4.1}


@pytest.fixture
def settings(redis_url: str, database_url: str, key_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=key_prefix,
        model_dir=DEFAULT_MODEL_DIR,
        data_dir=tmp_path / "data",
        auth=False,
    )


def uid() -> str:
    return uuid.uuid4().hex[:10]


async def post(client: httpx.AsyncClient, entity: str, k: int, values: dict[str, Any]) -> Any:
    body = {"event_id": f"e{k}", "time": T0 + k * HOUR, "values": values}
    response = await client.post(f"/v1/entities/{entity}/events", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def explain(client: httpx.AsyncClient, entity: str, step: int) -> httpx.Response:
    return await client.get(f"/v1/entities/{entity}/scores/{step}/explanation")


async def stable_then(service: Running, entity: str, last: dict[str, Any]) -> list[Any]:
    """Six hours of the same vitals and creatinine 1.0, then ``last`` at the seventh."""
    answers = [
        await post(service.client, entity, k, {**VITALS, "Creatinine": 1.0}) for k in range(6)
    ]
    answers.append(await post(service.client, entity, 6, last))
    assert len(await wait_logged(service.services.score_log, entity, 7)) == 7
    return answers


async def test_a_creatinine_jump_ranks_first_and_its_effect_is_the_event_without_it(
    service: Running,
) -> None:
    entity, twin = f"ex-{uid()}", f"ex-{uid()}"
    answers = await stable_then(service, entity, {**VITALS, "Creatinine": 4.0})
    # the twin's seventh event is the same with creatinine not measured: what "withheld" means
    withheld = await stable_then(service, twin, dict(VITALS))

    response = await explain(service.client, entity, 7)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["entity_id"], body["event_id"], body["step"]) == (entity, "e6", 7)
    assert body["model"] == {"name": "aki-lstm", "version": "1.2.0"}
    assert body["reproduced"] is True
    assert set(body["outputs"]) == {"aki_48h", "sepsis"}
    aki = body["outputs"]["aki_48h"]
    assert aki["risk"] == answers[6]["risk"]["aki_48h"]
    assert aki["previous"] == answers[5]["risk"]["aki_48h"]
    assert aki["risk"] > aki["previous"]  # the jump moved the risk up
    first = aki["inputs"][0]
    assert (first["feature"], first["value"]) == ("Creatinine", 4.0)
    assert first["effect"] > 0
    # every input the event carried, ranked by |effect|
    assert sorted(i["feature"] for i in aki["inputs"]) == sorted([*VITALS, "Creatinine"])
    magnitudes = [abs(i["effect"]) for i in aki["inputs"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert magnitudes[0] > 2 * magnitudes[1]
    # the effect is the risk minus that of the same event, live, without creatinine
    without = withheld[6]["risk"]["aki_48h"]
    assert first["effect"] == pytest.approx(aki["risk"] - without, abs=1e-5)


async def test_a_first_event_has_no_previous_risk(service: Running) -> None:
    entity = f"ex-{uid()}"
    answer = await post(service.client, entity, 0, {"HR": 120.0, "Creatinine": 2.0})
    await wait_logged(service.services.score_log, entity, 1)
    response = await explain(service.client, entity, 1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reproduced"] is True
    for name, output in body["outputs"].items():
        assert output["previous"] is None
        assert output["risk"] == answer["risk"][name]
        assert {i["feature"] for i in output["inputs"]} == {"HR", "Creatinine"}


async def test_an_unknown_entity_or_step_is_404_naming_the_field(service: Running) -> None:
    entity = f"ex-{uid()}"
    response = await explain(service.client, entity, 1)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_entity"
    assert response.json()["error"]["field"] == "entity_id"

    await post(service.client, entity, 0, {"HR": 80.0})
    await wait_logged(service.services.score_log, entity, 1)
    response = await explain(service.client, entity, 2)
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("not_found", "step")
    assert "steps 1 to 1" in error["message"]

    response = await explain(service.client, entity, 0)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "step"


async def test_a_step_before_the_current_stay_is_not_found(service: Running) -> None:
    entity = f"ex-{uid()}"
    for k in range(3):
        await post(service.client, entity, k, {"HR": 80.0 + k})
    await wait_logged(service.services.score_log, entity, 3)
    assert (await service.client.delete(f"/v1/entities/{entity}")).status_code == 200
    await post(service.client, entity, 5, {"HR": 90.0})  # a new stay: step 1 again
    await wait_logged(service.services.score_log, entity, 4)
    assert (await explain(service.client, entity, 1)).json()["event_id"] == "e5"
    response = await explain(service.client, entity, 3)
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "step"


async def test_a_score_of_another_model_version_is_refused(service: Running) -> None:
    entity = f"ex-{uid()}"
    score = Score(
        score_id=uuid.uuid4().hex,
        entity_id=entity,
        event_id="old",
        step=1,
        event_time=T0,
        scored_at=T0 + 1,
        model_name="aki-lstm",
        model_version="0.9.0",
        risk={"aki_48h": 0.1, "sepsis": 0.01},
    )
    assert await service.services.score_log.append([LoggedScore(score, {"HR": 80.0})]) == 1
    response = await explain(service.client, entity, 1)
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("model_mismatch", "step")
    assert "aki-lstm/0.9.0" in error["message"] and "aki-lstm/1.2.0" in error["message"]
