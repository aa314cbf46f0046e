"""Audit: a DELETE is recorded in SQL before the state is forgotten; outbox records from before
the key name travelled with them still decode."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from riskstream.adapters.codec import decode_logged, encode_logged, score_to_dict
from riskstream.bootstrap import create_app
from riskstream.core.domain import LoggedScore, Score
from riskstream.settings import Settings

from tests.support.database import make_sqlite_unreachable
from tests.support.service import wait_logged

BODY = {"event_id": "e1", "time": "2026-11-25T08:00:00Z", "values": {"HR": 80}}


async def test_delete_with_the_database_down_forgets_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    db_file = tmp_path / "own.sqlite3"
    own = settings.model_copy(update={"database_url": f"sqlite:///{db_file}"})
    app = create_app(own)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rs") as client:
            assert (await client.post("/v1/entities/p1/events", json=BODY)).status_code == 200
            # the drain holds no SQL connection once the score is logged: disposing the engine
            # then closes every connection (one still checked out would be left unclosed)
            assert len(await wait_logged(app.state.services.score_log, "p1", 1)) == 1
            make_sqlite_unreachable(db_file)
            await app.state.services.score_log.dispose()

            refused = await client.delete("/v1/entities/p1")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["field"] == "database"
            assert "retry-after" in refused.headers
            still = await client.get("/v1/entities/p1/risk")
            assert still.status_code == 200 and still.json()["step"] == 1


SCORE = Score("s1", "p1", "e1", 1, 1.0, 2.0, "m", "1", {"aki_48h": 0.5})


def test_outbox_records_carry_the_key_name_and_old_ones_still_decode() -> None:
    assert decode_logged(encode_logged(LoggedScore(SCORE, {"HR": 1.0}, "ward-7"))).key_name == (
        "ward-7"
    )
    old = orjson.dumps({"score": score_to_dict(SCORE), "values": {"HR": 1.0}})
    decoded = decode_logged(old)
    assert decoded == LoggedScore(SCORE, {"HR": 1.0}, None)
    # and a record without a key is written as before (no "k")
    assert b'"k"' not in encode_logged(LoggedScore(SCORE, {"HR": 1.0}))


async def test_database_errors_never_carry_the_statements_values(tmp_path: Path) -> None:
    """A database error's message reaches the log (and dead letters): never the parameters,
    which for the score log are the events' feature values."""
    import sqlalchemy as sa
    from riskstream.adapters.sql.database import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("INSERT INTO nope VALUES (:v)"), {"v": "93.8125"})
    except sa.exc.DBAPIError as error:
        assert "93.8125" not in str(error)
    else:
        raise AssertionError("the insert into a missing table succeeded")
    finally:
        await engine.dispose()
