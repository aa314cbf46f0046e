"""A late event's score-log lookup failing (the database unreachable) fails that event only:
the other events of its request and of its micro-batch are scored, and reach SQL once the
database is back."""

from __future__ import annotations

import asyncio
import time

import httpx
from riskstream.adapters.sql.database import create_engine
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.bootstrap import create_app
from riskstream.settings import Settings

from tests.support.database import OwnDatabase

T = float(int(time.time()) // 3600 * 3600 - 86_400)


async def logged_ids(url: str, entity: str) -> set[str]:
    engine = create_engine(url)
    try:
        log = SqlScoreLog(engine)
        scores = await log.history(entity, since=None, after_step=None, limit=1000)
        return {s.event_id for s in scores}
    finally:
        await engine.dispose()


async def test_a_late_event_while_sql_is_down_fails_alone(
    settings: Settings, own_database: OwnDatabase, key_prefix: str
) -> None:
    own = settings.model_copy(update={"database_url": own_database.url})
    late, others = f"{key_prefix}-late", [f"{key_prefix}-{i}" for i in range(5)]
    app = create_app(own)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            for k in (0, 2):
                event = {"event_id": f"e{k}", "time": T + 3600 * k, "values": {"HR": 80}}
                r = await client.post(f"/v1/entities/{late}/events", json=event)
                assert r.status_code == 200, r.text
            deadline = time.monotonic() + 20
            while await logged_ids(own_database.url, late) != {"e0", "e2"}:
                assert time.monotonic() < deadline, "the first events never reached SQL"
                await asyncio.sleep(0.05)
            own_database.stop()
            # SQLite: connections opened before still reach the file that was unlinked
            await app.state.services.score_log.dispose()

            # one bulk request: the late event (not in the dedup history: the log is asked)
            # among events of other entities
            items = [{"entity_id": e, "event_id": "b1", "time": T, "values": {}} for e in others]
            items.insert(2, {"entity_id": late, "event_id": "late1", "time": T + 3600})
            response = await client.post("/v1/events", json=items)
            assert response.status_code == 200, response.text
            results = response.json()["results"]
            assert [r["status"] for r in results] == [200, 200, 503, 200, 200, 200]
            error = results[2]["error"]
            assert error["code"] == "unavailable" and "database" in error["message"]
            assert response.json()["accepted"] == 5

            # single requests batched together: only the late one fails
            posts = [
                client.post(
                    f"/v1/entities/{e}/events",
                    json={"event_id": "s1", "time": T + 60, "values": {"HR": 90}},
                )
                for e in others
            ]
            posts.insert(
                2,
                client.post(
                    f"/v1/entities/{late}/events", json={"event_id": "late2", "time": T + 60}
                ),
            )
            answers = await asyncio.gather(*posts)
            assert [a.status_code for a in answers] == [200, 200, 503, 200, 200, 200]
            for entity in others:
                risk = (await client.get(f"/v1/entities/{entity}/risk")).json()
                assert risk["step"] == 2 and risk["event_id"] == "s1"
            risk = (await client.get(f"/v1/entities/{late}/risk")).json()
            assert risk["step"] == 2 and risk["event_id"] == "e2"

            # the database back: every score answered is in SQL
            own_database.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                found = [await logged_ids(own_database.url, e) for e in others]
                if all(ids == {"b1", "s1"} for ids in found):
                    break
                await asyncio.sleep(0.1)
            assert found == [{"b1", "s1"}] * len(others)
            assert await logged_ids(own_database.url, late) == {"e0", "e2"}
