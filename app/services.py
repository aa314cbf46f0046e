from __future__ import annotations

from dataclasses import dataclass

from app.adapters.metrics import Metrics
from app.adapters.onnx_model import OnnxRiskModel
from app.adapters.redis_store import RedisOutbox, RedisStateStore
from app.adapters.redis_views import RedisViews
from app.adapters.sql.score_log import SqlScoreLog
from app.core.batcher import Scorer
from app.core.drain import OutboxDrainer
from app.core.engine import ScoringEngine
from app.core.service import RiskService
from app.settings import Settings
from app.web.auth import Guard


@dataclass(frozen=True)
class Services:
    """What the lifespan opened, closed when it ends. Routes ask only ``risk``, the application
    service typed with the core's ports; the adapters stay here for readiness, metrics and tests."""

    settings: Settings
    model: OnnxRiskModel
    engine: ScoringEngine
    scorer: Scorer
    store: RedisStateStore
    outbox: RedisOutbox
    score_log: SqlScoreLog
    drainer: OutboxDrainer
    metrics: Metrics
    views: RedisViews
    risk: RiskService
    guard: Guard
