from __future__ import annotations

from dataclasses import dataclass

from riskstream.adapters.metrics import Metrics
from riskstream.adapters.onnx_model import OnnxRiskModel
from riskstream.adapters.redis_store import RedisOutbox, RedisStateStore
from riskstream.adapters.redis_views import RedisViews
from riskstream.adapters.sql.score_log import SqlScoreLog
from riskstream.core.batcher import Scorer
from riskstream.core.drain import OutboxDrainer
from riskstream.core.engine import ScoringEngine
from riskstream.core.service import RiskService
from riskstream.settings import Settings
from riskstream.web.auth import Guard


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
