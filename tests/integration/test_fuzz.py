"""schemathesis over the service's own ``/openapi.json``, against a real server process.

Every operation is called with inputs generated from its declared schema (valid ones and, in
schemathesis's negative mode, invalid ones), and each answer is checked against the same
description: never a server error, a declared status code, a declared content type, a body that
matches the declared schema. The description is the contract that clients are generated from, so
an answer that does not match it is a bug of the service or of the description.

Generated bodies mostly fail validation (random feature names, times in year 200,000), so the
hooks below turn a share of them into realistic events: feature names from the model's manifest,
times near one another, event ids from a small pool (duplicates), entity ids from a small pool
(so GET and DELETE find entities that POST created, and events arrive late). The rest stay as
generated, which is where the poison inputs come from.

Bounded and deterministic for CI: hypothesis's ``derandomize`` (a fixed seed, derived from the
test code), a fixed number of examples per operation and no shrinking; ``/v1/stream`` is read
for a few events or at most ``STREAM_READ_S`` seconds. Besides schemathesis's checks, two of
ours: a body's media type must be documented, and a read the description calls valid must not
be refused as invalid (the request constraints are the ones the server enforces).

The operations are driven here (``operation.as_strategy`` under ``hypothesis.given``) rather than
by ``schemathesis.pytest.from_fixture``, which fails on pytest 9.2 (it sets ``node._nodeid``) and
stops at an operation's first failure; this collects every distinct failure of the whole run and
reports them together, each with a request that shows it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from riskstream.settings import Settings
from schemathesis import Case, GenerationMode, HookContext, Response
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup

from tests.support.model import TINY_MODEL_DIR
from tests.support.server import ServerProcess
from tests.support.service import create_key, server_env

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 250
STREAM_EXAMPLES = 25  # each one holds the stream open for STREAM_READ_S
STREAM_READ_S = 0.3
REQUEST_TIMEOUT_S = 10.0
LOG_WAIT_S = 10.0

# name -> the plausible range the manifest may declare (else a wide one)
RANGES: dict[str, tuple[float, float]] = {
    f["name"]: tuple(f.get("range", (-50.0, 400.0)))
    for f in json.loads((TINY_MODEL_DIR / "manifest.json").read_text())["features"]
}
FEATURES = list(RANGES)
ENTITY_POOL = ["fz-a", "fz-b", "fz-c"]
EVENT_POOL = [f"e{i}" for i in range(8)]
T0 = 1_790_000_000  # 2026-09-21, inside any sensible event-time window


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> dict[str, Any]:
    """Bulk NDJSON: a string goes as it is, a list as one JSON document a line."""
    if isinstance(value, str):
        return {"data": value.encode("utf-8", "surrogatepass")}
    if isinstance(value, list):
        return {"data": "\n".join(json.dumps(item) for item in value).encode()}
    return {"data": json.dumps(value).encode()}


# -- realistic inputs ----------------------------------------------------------------------------

# Values at the edges of what JSON carries and what the service can store, mixed in at a low rate:
# the poison inputs of issue 11 (times that overflow or come from far away, values beyond float32,
# ids that no route can address) and their neighbours.
EDGE_TIMES: list[Any] = [
    1e20,
    -1e12,
    3e11,
    253_402_300_800,
    -62_135_596_800,
    0,
    -1,
    1e-7,
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "1899-12-31T23:59:59Z",
    "2999-01-01T00:00:00Z",
    "2026-09-21T14:13:20.123456789Z",
    "2026-09-21T14:13:20+23:59",
]
EDGE_VALUES: list[Any] = [
    1e308,
    -1e308,
    3.5e38,
    -3.5e38,
    3.4028234663852886e38,
    1e-320,
    -0.0,
    1e10,
    2**63,
    -(2**64),
]
EDGE_IDS: list[str] = [
    "ward/bed1",
    "a b",
    ".",
    "..",
    "é",
    "x" * 129,
    "",
    "a?b",
    "a#b",
    "%2F",
    "a\u0000b",
    "-a",
]


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """``choices`` as (weight, strategy): one strategy drawn with odds by weight."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(min_value=0, max_value=len(pool) - 1).flatmap(lambda i: pool[i])


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


_epoch = st.integers(min_value=0, max_value=3 * 24 * 60).map(lambda minutes: T0 + 60 * minutes)
_times = _weighted((5, _epoch), (4, _epoch.map(_iso)), (1, st.sampled_from(EDGE_TIMES)))
_event_ids = _weighted(
    (6, st.sampled_from(EVENT_POOL)),
    (3, st.from_regex(r"\Ae[0-9]{2,4}\Z")),
    (1, st.sampled_from(EDGE_IDS)),
)
_entity_ids = _weighted((9, st.sampled_from(ENTITY_POOL)), (1, st.sampled_from(EDGE_IDS)))
_values = st.sets(st.sampled_from(FEATURES), max_size=6).flatmap(
    lambda names: st.fixed_dictionaries(
        {
            name: _weighted(
                (2, st.none()),
                (12, st.floats(min_value=RANGES[name][0], max_value=RANGES[name][1])),
                (1, st.sampled_from(EDGE_VALUES)),
            )
            for name in sorted(names)
        }
    )
)


def _event(with_entity: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "event_id": _event_ids,
        "time": _times,
        "values": _values,
    }
    if with_entity:
        fields["entity_id"] = _entity_ids
    return st.fixed_dictionaries(fields)


def _with_feature_names(generated: Any) -> st.SearchStrategy[Any]:
    """The generated body with a realistic id and time but its own values under real feature
    names: this is how the generator's huge, tiny and negative numbers reach the model."""
    if not isinstance(generated, dict):
        return st.just(generated)
    values = generated.get("values")
    if isinstance(values, dict) and values:
        values = {FEATURES[i % len(FEATURES)]: v for i, v in enumerate(values.values())}
    return st.fixed_dictionaries({"event_id": _event_ids, "time": _times}).map(
        lambda base: {**generated, **base, "values": values}
    )


def _mixed(generated: Any, realistic: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Half realistic, a quarter the generated values under feature names, a quarter as
    generated (from the schema, valid or, in negative mode, not)."""
    return _weighted((2, realistic), (1, _with_feature_names(generated)), (1, st.just(generated)))


def _operation(context: HookContext) -> tuple[str, str]:
    assert context.operation is not None
    return context.operation.method.upper(), context.operation.path


def register_hooks(schema: Any) -> None:
    @schema.hook
    def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
        method, path = _operation(context)
        if (method, path) == ("POST", "/v1/entities/{entity_id}/events"):
            return _mixed(body, _event(with_entity=False))
        if (method, path) == ("POST", "/v1/events"):
            items = st.lists(_event(with_entity=True), min_size=1, max_size=8)
            if isinstance(body, str):  # NDJSON: lines of realistic events
                return _mixed(body, items.map(lambda xs: "\n".join(json.dumps(x) for x in xs)))
            if isinstance(body, list) and body:
                renamed = st.tuples(*[_with_feature_names(x) for x in body[:8]]).map(list)
                return _weighted((2, items), (1, renamed), (1, st.just(body)))
            if isinstance(body, list):
                return _weighted((3, items), (1, st.just(body)))
        return st.just(body)

    @schema.hook
    def flatmap_path_parameters(
        context: HookContext, path_parameters: dict[str, Any]
    ) -> st.SearchStrategy[dict[str, Any]]:
        """Mostly the pool's entities, so reads and deletes find what the posts created."""
        if not isinstance(path_parameters, dict) or "entity_id" not in path_parameters:
            return st.just(path_parameters)
        pooled = st.sampled_from(ENTITY_POOL).map(lambda e: {**path_parameters, "entity_id": e})
        return _weighted((3, pooled), (1, st.just(path_parameters)))


# -- the server and the schema -------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": True})  # as deployed: every call carries a key


@pytest.fixture
def admin_headers(settings: Settings) -> dict[str, str]:
    secret = create_key(str(settings.database_url), "admin")
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def fuzz_server(settings: Settings, tmp_path: Path) -> Iterator[ServerProcess]:
    env = server_env(settings, STREAM_POLL_S="0.05", STREAM_HEARTBEAT_S="0.1")
    server = ServerProcess(env, tmp_path / "server.log")
    yield server
    server.stop()


def load_schema(url: str) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "request-timeout": REQUEST_TIMEOUT_S,
            "max-stream-events": 3,
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
            "operations": [{"include-path": "/v1/stream", "request-timeout": STREAM_READ_S}],
        }
    )
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    register_hooks(schema)
    return schema


@dataclass
class Finding:
    """One distinct failure: an operation, a check, a status; the first request that showed it."""

    operation: str
    check: str
    status: int
    count: int
    curl: str
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.operation}: {self.check} (status {self.status}, {self.count}x)\n"
            f"    {self.curl}\n    {self.detail}"
        )


class Findings:
    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str, int, str], Finding] = {}
        self.statuses: dict[str, Counter[int]] = {}
        self.seconds: dict[str, float] = {}
        # (entity, event id) -> step of each new score answered for an entity of the pool
        self.answered: dict[tuple[str, str], int] = {}

    def note_answer(self, case: Case, response: Response) -> None:
        """Remember the new scores answered 200, to find them in the SQL log at the end."""
        if case.method.upper() != "POST" or response.status_code != 200:
            return
        body = response.json()
        results = body.get("results", [body]) if isinstance(body, dict) else []
        for result in results:
            if (
                isinstance(result, dict)
                and result.get("status", 200) == 200
                and result.get("duplicate") is False
                and result.get("entity_id") in ENTITY_POOL
            ):
                self.answered[(result["entity_id"], result["event_id"])] = result["step"]

    def summary(self) -> str:
        return "\n".join(
            f"  {label}: {sum(c.values())} calls in {self.seconds.get(label, 0):.1f} s, "
            f"statuses {dict(sorted(c.items()))}"
            for label, c in self.statuses.items()
        )

    def record(self, case: Case, response: Response, failure: Exception) -> None:
        check = (
            f"{getattr(failure, 'code', '?')} {getattr(failure, 'title', type(failure).__name__)}"
        )
        message = str(getattr(failure, "message", failure)).strip()
        if hasattr(failure, "schema_path"):  # a schema violation: where in the schema, and why
            where = "/".join(str(p) for p in failure.schema_path)
            at = "/".join(str(p) for p in getattr(failure, "instance_path", []))
            what = f"at body/{at} (schema {where}): {getattr(failure, '_raw_message', '')}"[:300]
            key_part = where
        else:
            what = message.splitlines()[0][:300] if message else ""
            key_part = what
        key = (case.operation.label, check, response.status_code, key_part)
        if key in self.by_key:
            self.by_key[key].count += 1
            return
        self.add(key, case, response.status_code, f"{what}\n    answer: {response.text[:300]!r}")

    def add(
        self,
        key: tuple[str, str, int, str],
        case: Case,
        status: int,
        detail: str,
        curl: str | None = None,
    ) -> None:
        if key in self.by_key:
            self.by_key[key].count += 1
            return
        self.by_key[key] = Finding(
            operation=case.operation.label,
            check=key[1],
            status=status,
            count=1,
            curl=(curl or case.as_curl_command())[:600],
            detail=detail,
        )


def documented_media_type(raw_schema: dict[str, Any]) -> Any:
    """A check schemathesis leaves out: a response with a body must document its media type.
    (``content_type_conformance`` passes whenever a response documents no content at all, which
    is how ``/v1/stream`` and ``/metrics`` hid their media types.)"""

    def undocumented_media_type(ctx: Any, response: Response, case: Case) -> None:
        operation = raw_schema["paths"][case.operation.path][case.operation.method.lower()]
        declared = operation.get("responses", {})
        entry = declared.get(str(response.status_code), declared.get("default"))
        if not response.content or entry is None:  # no body, or status_code_conformance's case
            return
        media_types = list(entry.get("content", {}))
        received = response.headers.get("content-type", ["(none)"])[0].split(";")[0].strip()
        if received not in media_types:
            raise AssertionError(
                f"Undocumented media type: a {response.status_code} answer with a "
                f"{received} body; documented for {response.status_code}: {media_types or 'none'}"
            )

    return undocumented_media_type


def schema_valid_read_accepted(ctx: Any, response: Response, case: Case) -> None:
    """A read the description calls valid (schemathesis's positive mode) is not refused as
    invalid: the declared parameter constraints are the ones the server enforces. (Writes are
    left out: their event-time window moves with the clock, which no static schema can say.)"""
    meta = case.meta
    if (
        case.method.upper() == "GET"
        and meta is not None
        and meta.generation.mode == GenerationMode.POSITIVE
        and response.status_code == 422
    ):
        raise AssertionError(
            "Schema-valid request rejected: the description allows what the server refuses"
        )


def _run_operation(operation: Any, url: str, session: requests.Session, findings: Findings) -> None:
    media_type_check = documented_media_type(operation.schema.raw_schema)
    strategies = [
        *operation.schema.get_strategies_from_examples(operation),
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]

    @hypothesis.settings(
        max_examples=STREAM_EXAMPLES if operation.path == "/v1/stream" else EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=st.one_of(strategies))
    def call(case: Case) -> None:
        try:
            response = case.call(base_url=url, session=session)
        except requests.RequestException as exc:  # e.g. the connection dropped mid-answer
            error = type(exc).__name__
            findings.add((case.operation.label, "network error", 0, error), case, 0, str(exc))
            return
        findings.statuses.setdefault(case.operation.label, Counter())[response.status_code] += 1
        findings.note_answer(case, response)
        try:
            case.validate_response(
                response, additional_checks=[media_type_check, schema_valid_read_accepted]
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                findings.record(case, response, failure)

    call()


PROBES: list[tuple[str, dict[str, str], bytes]] = [
    # what a generator does not send: the wrong media type, none, and bodies no parser likes
    ("text/plain", {"content-type": "text/plain"}, b'{"event_id": "p1", "time": 1790000000}'),
    ("no content type", {}, b'{"event_id": "p2", "time": 1790000000}'),
    ("deeply nested JSON", {"content-type": "application/json"}, b"[" * 100_000 + b"]" * 100_000),
    ("invalid UTF-8", {"content-type": "application/json"}, b'{"event_id": "\xff\xfe"}'),
]


def _probe(operation: Any, url: str, findings: Findings, auth: dict[str, str]) -> None:
    """Each write once with each probe; the same checks as the generated calls."""
    case = operation.Case(
        path_parameters={"entity_id": "fz-probe"}, body=None, media_type="application/json"
    )
    path = operation.path.replace("{entity_id}", "fz-probe")
    checks = [documented_media_type(operation.schema.raw_schema)]
    for name, headers, body in PROBES:
        sent = requests.post(f"{url}{path}", data=body, headers={**auth, **headers}, timeout=10)
        findings.statuses.setdefault(operation.label, Counter())[sent.status_code] += 1
        try:
            case.validate_response(sent, additional_checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                title = getattr(failure, "title", type(failure).__name__)
                key = (operation.label, f"probe {name}: {title}", sent.status_code, "")
                curl = f"POST {path} with {name} ({headers or 'no headers'}, {len(body)} bytes)"
                findings.add(key, case, sent.status_code, f"answer: {sent.text[:300]!r}", curl)


def _not_logged(url: str, answered: dict[tuple[str, str], int], auth: dict[str, str]) -> list[str]:
    """The answered scores that the SQL log (read through its route) does not hold, once the
    drain has had ``LOG_WAIT_S`` seconds: the promise that no answered score is lost."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        logged: set[tuple[str, str, int]] = set()
        problems: list[str] = []
        for entity in ENTITY_POOL:
            try:
                response = httpx.get(
                    f"{url}/v1/entities/{entity}/scores",
                    params={"limit": 1000},
                    headers=auth,
                    timeout=10,
                )
            except httpx.HTTPError as exc:
                problems.append(f"GET scores of {entity}: {exc!r}")
                continue
            if response.status_code != 200:
                problems.append(f"GET scores of {entity}: {response.status_code}")
                continue
            logged |= {(entity, s["event_id"], s["step"]) for s in response.json()["scores"]}
        missing = problems + [
            f"{e}/{ev} step {step}"
            for (e, ev), step in sorted(answered.items())
            if (e, ev, step) not in logged
        ]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def test_every_operation_answers_as_its_openapi_description_says(
    fuzz_server: ServerProcess, admin_headers: dict[str, str]
) -> None:
    schema = load_schema(fuzz_server.url)
    findings = Findings()
    invalid: list[str] = []
    with requests.Session() as session:
        session.headers.update(admin_headers)
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                invalid.append(str(result.err()))
                continue
            started = time.monotonic()
            _run_operation(result.ok(), fuzz_server.url, session, findings)
            if result.ok().method.upper() == "POST":
                _probe(result.ok(), fuzz_server.url, findings, admin_headers)
            findings.seconds[result.ok().label] = time.monotonic() - started
    missing = _not_logged(fuzz_server.url, findings.answered, admin_headers)
    report = [str(f) for f in findings.by_key.values()]
    if missing:
        report.append(
            f"{len(missing)} of {len(findings.answered)} scores answered 200 are not in the SQL "
            f"log {LOG_WAIT_S:.0f} s later (GET /v1/entities/{{id}}/scores): {missing[:10]}"
        )
    print(findings.summary())
    assert not invalid and not report, (
        f"{len(report)} distinct failures\n{findings.summary()}"
        + "".join(f"\n- {line}" for line in invalid + report)
    )
