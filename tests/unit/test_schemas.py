"""The response builders skip validation for speed (``schemas._build``): here every builder's
output is validated against its own model, so a builder that leaves out a field or gives one of
the wrong type fails here rather than on the wire."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from riskstream.core.alerts import Threshold
from riskstream.core.domain import FeedEntry, FeedPage, Outcome, Score, Watched
from riskstream.core.errors import InvalidInput
from riskstream.core.explain import Explanation, InputEffect, OutputExplanation
from riskstream.web.schemas import (
    BulkErrorOut,
    BulkOut,
    BulkScoredOut,
    ErrorBody,
    EventOut,
    ExplanationOut,
    FeedEntryOut,
    FeedOut,
    HistoryScoreOut,
    LatestRiskOut,
    WatchedOut,
    WatchlistOut,
)

T = 1_795_510_800.0
SCORE = Score(
    "ab" * 16, "p1", "e1", 3, T, T + 0.123456, "aki-lstm", "1.2.0", {"aki_48h": 0.25, "sepsis": 0.5}
)
PREVIOUS = Score("cd" * 16, "p1", "e0", 2, T - 60, T - 59, "aki-lstm", "1.2.0", {"aki_48h": 0.125})
WATCHED = Watched("p1", 3, T, SCORE, PREVIOUS, {"sepsis": T - 30})
OUTPUTS = ("aki_48h", "sepsis")
EXPLANATION = Explanation(
    SCORE,
    {
        "aki_48h": OutputExplanation(0.25, 0.125, (InputEffect("Creatinine", 4.0, 0.1),)),
        "sepsis": OutputExplanation(0.5, None, ()),
    },
    reproduced=True,
    difference=0.0,
)


def built() -> list[BaseModel]:
    scored = BulkScoredOut.of_item(0, Outcome(SCORE, False))
    failed = BulkErrorOut.of_item(1, InvalidInput("bad", field="values.X"))
    return [
        EventOut.of_outcome(Outcome(SCORE, True)),
        HistoryScoreOut.of_logged(SCORE, {"HR": 80.0, "Temp": None}),
        HistoryScoreOut.of_logged(SCORE, None),
        LatestRiskOut.of_watched(WATCHED),
        WatchedOut.of_watched_in(WATCHED, OUTPUTS),
        FeedEntryOut.of_entry(FeedEntry("1795510800123-0", SCORE, {"aki_48h": T})),
        ErrorBody.of(InvalidInput("bad", field="time")),
        scored,
        failed,
        BulkOut.of_results([scored, failed]),
        WatchlistOut.of("aki_48h", {"aki_48h": Threshold(0.5, 0.25)}, [WATCHED], OUTPUTS),
        FeedOut.of(FeedPage([FeedEntry("1-0", SCORE, {})], "2-0"), None),
        ExplanationOut.of_explanation(EXPLANATION),
    ]


@pytest.mark.parametrize("model", built(), ids=lambda m: type(m).__name__)
def test_each_builder_makes_a_complete_valid_model(model: BaseModel) -> None:
    assert set(model.__dict__) == set(type(model).model_fields)
    sent = model.__pydantic_serializer__.to_json(model)
    again = type(model).model_validate_json(sent)
    assert again.__pydantic_serializer__.to_json(again) == sent


def test_times_are_iso_8601_in_utc_with_a_z() -> None:
    body = EventOut.of_outcome(Outcome(SCORE, False)).model_dump(mode="json")
    assert body["time"] == "2026-11-24T09:00:00Z"
    assert body["scored_at"] == "2026-11-24T09:00:00.123456Z"
    watched = WatchedOut.of_watched_in(WATCHED, OUTPUTS).model_dump(mode="json")
    assert watched["change"] == {"aki_48h": 0.125, "sepsis": None}
    assert watched["alerts"] == {"aki_48h": None, "sepsis": {"since": "2026-11-24T08:59:30Z"}}
