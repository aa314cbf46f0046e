from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from app.core.errors import InvalidInput
from app.web import render
from app.web.deps import ServicesDep
from app.web.responses import JSON
from app.web.schemas import ErrorOut, ScorePage

router = APIRouter(prefix="/v1/entities", tags=["entities"])

EntityId = Annotated[str, Path(description="The entity: a patient, an account…")]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (404, 422, 503)}


@router.get("/{entity_id}/risk", summary="The entity's latest score", responses=_ERRORS)
async def get_risk(entity_id: EntityId, services: ServicesDep) -> JSON:
    return JSON(render.latest(await services.engine.latest(entity_id)))


@router.get(
    "/{entity_id}/scores",
    summary="The entity's score history from the score log, oldest first",
    responses={200: {"model": ScorePage}, **_ERRORS},
)
async def get_scores(
    entity_id: EntityId,
    services: ServicesDep,
    since: Annotated[
        datetime | None, Query(description="Only events at or after this time (ISO 8601)")
    ] = None,
    after_step: Annotated[
        int | None, Query(ge=0, description="Page cursor: the previous page's next_after_step")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    include_values: Annotated[
        bool, Query(description="Add each event's values as received (for charts)")
    ] = False,
) -> JSON:
    if since is not None and since.tzinfo is None:
        raise InvalidInput("since has no UTC offset; add 'Z' or e.g. '+01:00'", field="since")
    page: dict[str, Any] = {"entity_id": entity_id}
    if include_values:
        logged = await services.engine.history_with_values(
            entity_id, since=since, after_step=after_step, limit=limit
        )
        page["scores"] = [{**render.score(r.score), "values": r.values} for r in logged]
        steps = [r.score.step for r in logged]
    else:
        scores = await services.engine.history(
            entity_id, since=since, after_step=after_step, limit=limit
        )
        page["scores"] = [render.score(s) for s in scores]
        steps = [s.step for s in scores]
    page["next_after_step"] = steps[-1] if len(steps) == limit else None
    return JSON(page)


@router.delete(
    "/{entity_id}",
    summary="Forget the entity's recurrent state (e.g. at discharge); its scores stay logged",
    responses=_ERRORS,
)
async def forget(entity_id: EntityId, services: ServicesDep) -> JSON:
    await services.engine.forget(entity_id)
    return JSON({"entity_id": entity_id, "forgotten": True})
