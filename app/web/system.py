from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.core import readiness
from app.core.errors import Unavailable
from app.core.manifest import Manifest
from app.web import openapi
from app.web.deps import RiskDep, ServicesDep
from app.web.errors import error_response
from app.web.responses import JSON, ModelJSON

router = APIRouter(tags=["system"])


@router.get(
    "/v1/model",
    summary="The loaded model's manifest",
    response_model=Manifest,
    responses=openapi.errors(example=openapi.MODEL_OUT),
)
async def get_model(risk: RiskDep) -> ModelJSON:
    return ModelJSON(risk.manifest)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", summary="Redis, the database and the model are all usable")
async def readyz(services: ServicesDep) -> JSON:
    # 503 while Redis or the database is unreachable (leave the load balancer); else 200,
    # "ready", or "degraded" with warnings an operator must act on (app.core.readiness).
    checks: dict[str, str] = {"model": services.model.manifest.key}
    failed: list[str] = []
    for name, ping in (("redis", services.store.ping), ("database", services.score_log.ping)):
        try:
            await ping()
            checks[name] = "ok"
        except Unavailable as exc:
            checks[name] = exc.message
            failed.append(name)
    if failed:
        response = error_response(
            503,
            "not_ready",
            f"not ready: {', '.join(failed)} unreachable",
            field=failed[0],
            errors=[{"field": name, "message": checks[name]} for name in failed],
            headers={"Retry-After": str(services.settings.retry_after_seconds)},
        )
        return response
    try:
        warnings = await readiness.warnings(
            services.outbox, services.drainer, stall_s=services.settings.outbox_stall_s
        )
    except Unavailable:  # Redis went away since the ping: the next probe says so
        warnings = []
    body: dict[str, Any] = {"status": "degraded" if warnings else "ready", "checks": checks}
    if warnings:
        body["warnings"] = warnings
    return JSON(body)
