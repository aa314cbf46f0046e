from __future__ import annotations

from fastapi import APIRouter

from riskstream.core.manifest import Manifest
from riskstream.web import openapi
from riskstream.web.auth import READ
from riskstream.web.deps import RiskDep, SettingsDep
from riskstream.web.errors import error_response
from riskstream.web.responses import ModelJSON
from riskstream.web.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["system"])


@router.get(
    "/v1/model",
    summary="The loaded model's manifest",
    response_model=Manifest,
    responses=openapi.errors(example=openapi.MODEL_OUT),
    dependencies=[READ],
)
async def get_model(risk: RiskDep) -> ModelJSON:
    return ModelJSON(risk.manifest)


@router.get("/healthz", summary="The process is alive", response_model=HealthOut)
async def healthz() -> ModelJSON:
    return ModelJSON(HealthOut(status="alive"))


@router.get(
    "/readyz",
    summary="Redis, the database and the model are all usable",
    description=(
        "503 `not_ready` while Redis or the database cannot be reached (take this process out "
        "of the load balancer). Otherwise 200: `ready`, or `degraded` with `warnings` that "
        "leaving the load balancer cannot fix: dead letters waiting, a stalled outbox drain, "
        "Redis found emptied."
    ),
    response_model=ReadyOut,
    responses=openapi.errors(503, example=openapi.READY_OUT),
)
async def readyz(risk: RiskDep, settings: SettingsDep) -> ModelJSON:
    readiness = await risk.readiness()
    if readiness.unreachable:
        return error_response(
            503,
            "not_ready",
            f"not ready: {', '.join(readiness.unreachable)} unreachable",
            field=readiness.unreachable[0],
            errors=[{"field": n, "message": readiness.checks[n]} for n in readiness.unreachable],
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    return ModelJSON(ReadyOut.of(readiness))
