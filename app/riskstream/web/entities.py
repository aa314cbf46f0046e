from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from riskstream.core.domain import MAX_STEP
from riskstream.web import openapi
from riskstream.web.auth import READ, AdminKey
from riskstream.web.deps import RiskDep
from riskstream.web.responses import ModelJSON
from riskstream.web.schemas import (
    ExplanationOut,
    ForgottenOut,
    HistoryScoreOut,
    LatestRiskOut,
    ScorePage,
    instant,
)

router = APIRouter(prefix="/v1/entities", tags=["entities"])

EntityId = Annotated[str, Path(description="The entity: a patient, an account…")]


@router.get(
    "/{entity_id}/risk",
    summary="The entity's latest score",
    response_model=LatestRiskOut,
    responses=openapi.errors(404, 409, 422, 503, example=openapi.LATEST_OUT),
    dependencies=[READ],
)
async def get_risk(entity_id: EntityId, risk: RiskDep) -> ModelJSON:
    return ModelJSON(LatestRiskOut.of_watched(await risk.latest_risk(entity_id)))


@router.get(
    "/{entity_id}/scores",
    summary="The entity's score history from the score log, oldest first",
    response_model=ScorePage,
    responses=openapi.errors(404, 422, 503, example=openapi.PAGE_OUT),
    dependencies=[READ],
)
async def get_scores(
    entity_id: EntityId,
    risk: RiskDep,
    since: Annotated[
        str | None,
        Query(description="Only events at or after this time (RFC 3339, with Z or an offset)"),
    ] = None,
    after_step: Annotated[
        int | None,
        Query(ge=0, le=MAX_STEP, description="Page cursor: the previous page's next_after_step"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    include_values: Annotated[
        bool, Query(description="Add each event's values as received (for charts)")
    ] = False,
) -> ModelJSON:
    after = instant(since, "since") if since is not None else None
    if include_values:
        logged = await risk.history_with_values(
            entity_id, since=after, after_step=after_step, limit=limit
        )
        scores = [HistoryScoreOut.of_logged(r.score, dict(r.values)) for r in logged]
    else:
        plain = await risk.history(entity_id, since=after, after_step=after_step, limit=limit)
        scores = [HistoryScoreOut.of_logged(s, None) for s in plain]
    return ModelJSON(
        ScorePage.model_construct(
            entity_id=entity_id,
            scores=scores,
            next_after_step=scores[-1].step if len(scores) == limit else None,
        )
    )


@router.get(
    "/{entity_id}/scores/{step}/explanation",
    summary="Why the logged score at this step moved: per output, the risk, the previous risk "
    "and the event's inputs ranked by their effect (each withheld in turn, replayed)",
    response_model=ExplanationOut,
    responses=openapi.errors(404, 409, 422, 503, example=openapi.EXPLANATION_OUT),
    dependencies=[READ],
)
async def get_explanation(
    entity_id: EntityId,
    step: Annotated[
        int, Path(ge=1, le=MAX_STEP, description="The step of the score, in the current stay")
    ],
    risk: RiskDep,
) -> ModelJSON:
    return ModelJSON(ExplanationOut.of_explanation(await risk.explain(entity_id, step)))


@router.delete(
    "/{entity_id}",
    summary="Forget the entity's recurrent state (e.g. at discharge); its scores stay logged",
    response_model=ForgottenOut,
    responses=openapi.errors(404, 422, 503, example={"entity_id": "p000001", "forgotten": True}),
)
async def forget(entity_id: EntityId, risk: RiskDep, principal: AdminKey) -> ModelJSON:
    await risk.forget(entity_id, key=principal.name if principal is not None else None)
    return ModelJSON(ForgottenOut.model_construct(entity_id=entity_id, forgotten=True))
