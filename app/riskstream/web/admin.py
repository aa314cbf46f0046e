"""Admin operations over HTTP (scope ``admin``): replay from the event log."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from riskstream.core.errors import InvalidInput
from riskstream.web import openapi
from riskstream.web.auth import require_admin
from riskstream.web.deps import RiskDep, json_write
from riskstream.web.responses import ModelJSON
from riskstream.web.schemas import ReplayIn, ReplayOut, SkippedOut

router = APIRouter(prefix="/v1/admin", tags=["admin"])

REPLAY_OUT = {
    "entities": 2,
    "installed": 2,
    "events": 96,
    "conflicts": 0,
    "skipped": [],
    "seconds": 0.01,
    "events_per_s": 9600.0,
}


@router.post(
    "/replay",
    summary="Rebuild entities' states from the event log (listed, or all) with this server's model",
    description=(
        "Each entity's logged events are stepped through the model, batched across entities, "
        "and its state written once with the compare-and-set of live events: an event arriving "
        "meanwhile is neither lost nor applied twice. The same as `riskstream replay`."
    ),
    response_model=ReplayOut,
    responses=openapi.errors(413, 415, 422, 503, example=REPLAY_OUT),
    dependencies=[Depends(json_write), Depends(require_admin)],
)
async def replay(body: ReplayIn, risk: RiskDep) -> ModelJSON:
    if body.all == (body.entity_ids is not None):
        raise InvalidInput("give either entity_ids or all: true", field="entity_ids")
    report = await risk.replay(None if body.all else body.entity_ids, model=body.model)
    return ModelJSON(
        ReplayOut(
            entities=report.entities,
            installed=report.installed,
            events=report.events,
            conflicts=report.conflicts,
            skipped=[SkippedOut(entity_id=e, reason=r) for e, r in report.skipped.items()],
            seconds=report.seconds,
            events_per_s=report.events_per_s,
        )
    )
