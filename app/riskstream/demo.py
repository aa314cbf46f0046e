"""``riskstream demo``: replay ICU patients from the PhysioNet 2019 data through a running service.

Each row of the table is one hourly event of one patient (``entity_id`` = ``patient_id``, time =
the patient's admission time + ``hour``, values = the row's measured features that the service's
model lists). Patients are admitted one after another, as on a ward, and the replay runs on a
simulated clock ``--speedup`` times faster than the wall clock (3600: one hour a second), posting
each tick's events in one bulk request. The clock starts in the past and never runs ahead of the
present: the service refuses event times from the future. It talks only to ``--url``, with the
API key of ``--key``, env ``RISKSTREAM_API_KEY`` or ``DATA_DIR/admin.key`` (docs/auth.md).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from riskstream.progress import bar, enabled
from riskstream.resources import resource

DEFAULT_DATA = resource("demo") / "physionet2019-sample.parquet"
NOT_FEATURES = {"patient_id", "hour", "SepsisLabel"}
BULK_CHUNK = 1000
_MAX_HISTORY_S = 10 * 365 * 86_400.0  # the replay's clock starts at most ten years back


@dataclass
class Patient:
    patient_id: str
    admit_hour: float  # simulated hours after the replay starts
    rows: list[tuple[int, dict[str, float]]]  # (hour, values), in hour order
    posted: int = 0


@dataclass
class Progress:
    posted: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    latest: dict[str, dict[str, float]] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="riskstream demo",
        description="Replay PhysioNet 2019 ICU patients through a running riskstream service.",
    )
    p.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the service (default: %(default)s)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a PhysioNet 2019 parquet table, e.g. all of training set A (default: the "
        "200-patient sample that comes with riskstream)",
    )
    p.add_argument(
        "--patients", type=int, default=24, help="patients to replay (default: %(default)s)"
    )
    p.add_argument(
        "--speedup",
        type=float,
        default=3600.0,
        help="simulated seconds per wall-clock second (default: %(default)s, one hour a second)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="stop after this many wall-clock seconds (default: %(default)s)",
    )
    p.add_argument(
        "--admit-every",
        type=float,
        default=1.5,
        help="mean simulated hours between admissions (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="which patients, and when they arrive")
    p.add_argument("--quiet", action="store_true", help="print only the summary (no progress bar)")
    p.add_argument(
        "--key",
        default=None,
        help="API key with scopes ingest and read (default: env RISKSTREAM_API_KEY, else "
        "the secret in DATA_DIR/admin.key, the key a first `riskstream serve` wrote)",
    )
    return p


def api_key(given: str | None) -> str | None:
    """``--key``, else env ``RISKSTREAM_API_KEY``, else ``DATA_DIR/admin.key`` (DATA_DIR as
    ``riskstream serve`` reads it: the environment, default ``riskstream-data``)."""
    if given:
        return given
    if os.environ.get("RISKSTREAM_API_KEY"):
        return os.environ["RISKSTREAM_API_KEY"]
    path = Path(os.environ.get("DATA_DIR") or "riskstream-data") / "admin.key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def load_patients(
    path: Path, features: Sequence[str], n: int, seed: int, admit_every: float
) -> list[Patient]:
    try:
        import pyarrow.compute as pc  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SystemExit(f"riskstream demo reads parquet with pyarrow ({exc})") from exc

    schema = pq.read_schema(path)
    missing = {"patient_id", "hour"} - set(schema.names)
    if missing:
        names = ", ".join(sorted(missing))
        raise SystemExit(f"{path}: not a PhysioNet 2019 table (no column {names})")
    wanted = [f for f in features if f in schema.names and f not in NOT_FEATURES]
    if not wanted:
        raise SystemExit(f"{path}: none of the model's features is a column")
    ids = pq.read_table(path, columns=["patient_id"]).column("patient_id")
    unique = sorted(str(x) for x in pc.unique(ids).to_pylist())
    rng = random.Random(seed)
    chosen = rng.sample(unique, min(n, len(unique)))
    table = pq.read_table(
        path, columns=["patient_id", "hour", *wanted], filters=[("patient_id", "in", chosen)]
    )
    by_patient: dict[str, list[tuple[int, dict[str, float]]]] = {pid: [] for pid in chosen}
    columns = {name: table.column(name).to_pylist() for name in ["patient_id", "hour", *wanted]}
    for i, pid in enumerate(columns["patient_id"]):
        values: dict[str, float] = {}
        for name in wanted:
            v = columns[name][i]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                values[name] = float(v)
        by_patient[str(pid)].append((int(columns["hour"][i]), values))
    # A third of the ward is there from the start (arriving five minutes apart), the others
    # are admitted one by one, on average every `admit_every` hours, on 5-minute marks.
    patients = []
    admit = 0.0
    for i, pid in enumerate(chosen):
        rows = sorted(by_patient[pid], key=lambda r: r[0])
        if not rows:
            continue
        patients.append(Patient(pid, admit, rows))
        gap = 5 / 60 if i < len(chosen) // 3 else rng.uniform(0.0, 2.0 * admit_every)
        admit += round(gap * 12) / 12
    return patients


def _last_event_time(client: httpx.Client, patient_id: str) -> datetime | None:
    """When the service already knows the patient (an earlier replay): its last event's time."""
    r = client.get(f"/v1/entities/{patient_id}/risk")
    if r.status_code != 200:
        return None
    return datetime.fromisoformat(str(r.json()["last_event_time"]).replace("Z", "+00:00"))


def _start(client: httpx.Client, patients: Sequence[Patient], longest_s: float) -> datetime:
    """When the replay's clock starts: ``longest_s`` simulated seconds (--max-seconds at
    --speedup) before now, so that it reaches the present when the run's time is up and never
    sends a time from the future; or, when the service already knows these patients from an
    earlier replay, after their last events, so that their stays go on (the replay then stops
    once its clock catches up with the present)."""
    now = datetime.now(UTC)
    base = now - timedelta(seconds=min(longest_s, _MAX_HISTORY_S))
    base = base.replace(second=0, microsecond=0)
    known = (_last_event_time(client, p.patient_id) for p in patients)
    earlier = [t for t in known if t is not None]
    if earlier:
        after = max(earlier).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
        base = max(base, after)
    return base


def _post(client: httpx.Client, batch: list[dict[str, Any]], progress: Progress) -> None:
    for start in range(0, len(batch), BULK_CHUNK):
        chunk = batch[start : start + BULK_CHUNK]
        r = client.post("/v1/events", json=chunk)
        if r.status_code != 200:
            progress.rejected += len(chunk)
            progress.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
            continue
        body = r.json()
        progress.posted += int(body.get("accepted", 0))
        progress.rejected += int(body.get("rejected", 0))
        for item in body.get("results", []):
            if "error" in item:
                progress.errors.append(str(item["error"].get("message", item["error"])))
            elif "risk" in item:
                progress.latest[item["entity_id"]] = item["risk"]


def _report(
    progress: Progress, outputs: Sequence[str], admitted: int, total: int, sim_h: float
) -> str:
    parts = [
        f"sim +{sim_h:5.1f} h",
        f"{admitted}/{total} admitted",
        f"{progress.posted} events scored",
    ]
    if progress.rejected:
        parts.append(f"{progress.rejected} rejected")
    for o in outputs:
        if progress.latest:
            pid, risk = max(progress.latest.items(), key=lambda kv: kv[1].get(o, 0.0))
            parts.append(f"top {o} {pid} {risk.get(o, 0.0):.2f}")
    return " · ".join(parts)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.speedup <= 0 or args.patients < 1 or args.max_seconds <= 0:
        print("riskstream demo: --speedup, --patients, --max-seconds must be > 0", file=sys.stderr)
        return 2
    data = args.data or DEFAULT_DATA
    if not data.exists():
        print(f"riskstream demo: no data at {data}", file=sys.stderr)
        return 2

    key = api_key(args.key)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.Client(base_url=args.url.rstrip("/"), timeout=30.0, headers=headers)
    try:
        try:
            ready = client.get("/readyz")
            answer = client.get("/v1/model")
        except httpx.HTTPError as exc:
            print(
                f"riskstream demo: no service at {args.url} ({exc}); "
                "start one with `riskstream serve`",
                file=sys.stderr,
            )
            return 1
        if ready.status_code != 200:
            print(f"riskstream demo: {args.url} is not ready: {ready.text[:300]}", file=sys.stderr)
            return 1
        if answer.status_code in (401, 403):
            print(
                f"riskstream demo: {args.url} refused the key ({answer.status_code}): "
                "pass --key (scopes ingest, read) or set RISKSTREAM_API_KEY",
                file=sys.stderr,
            )
            return 1
        manifest = answer.json()
        features = [f["name"] for f in manifest["features"]]
        outputs = [o["name"] for o in manifest["outputs"]]
        patients = load_patients(data, features, args.patients, args.seed, args.admit_every)
        hours = sum(len(p.rows) for p in patients)
        # Every event, with its simulated time (hours after the replay's start), in replay order.
        planned: list[tuple[float, Patient, int, dict[str, float]]] = []
        for p in patients:
            first_hour = p.rows[0][0]
            for hour, values in p.rows:
                planned.append((p.admit_hour + hour - first_hour, p, hour, values))
        planned.sort(key=lambda x: x[0])
        base = _start(client, patients, args.max_seconds * args.speedup)
        ui = f"{args.url.rstrip('/')}/ui/"
        print(
            f"replaying {len(patients)} patients ({hours} hourly events) from {data} "
            f"into {args.url} at {args.speedup:g}x from {base:%Y-%m-%d %H:%M} UTC; "
            f"watch them at {ui}",
            flush=True,
        )
        run = base.strftime("%Y%m%dT%H%M")
        timeline: list[tuple[float, Patient, dict[str, Any]]] = []
        for at_h, p, hour, values in planned:
            at = base + timedelta(hours=at_h)
            event = {
                "entity_id": p.patient_id,
                "event_id": f"{run}-h{hour:03d}",
                "time": at.isoformat().replace("+00:00", "Z"),
                "values": values,
            }
            timeline.append((at_h, p, event))

        progress = Progress()
        tick = max(0.2, min(1.0, 3600.0 / args.speedup))
        started = time.monotonic()
        next_report = started
        i = 0
        # On a terminal a bar (events sent, with the latest report) stands for the report lines.
        drawn = enabled(args.quiet)
        shown = bar("demo", total=len(timeline), unit="event", quiet=args.quiet)
        try:
            while i < len(timeline):
                elapsed = time.monotonic() - started
                if elapsed >= args.max_seconds:
                    shown.close()
                    print(f"stopping after --max-seconds {args.max_seconds:g}", flush=True)
                    break
                sim_h = elapsed * args.speedup / 3600.0
                present_h = (datetime.now(UTC) - base).total_seconds() / 3600.0
                if i < len(timeline) and timeline[i][0] > present_h:
                    shown.close()
                    print(
                        "the replay has caught up with the present (the service takes no events "
                        "from the future); run it again later, or pick other patients with --seed",
                        flush=True,
                    )
                    break
                sim_h = min(sim_h, present_h)
                batch = []
                while i < len(timeline) and timeline[i][0] <= sim_h:
                    timeline[i][1].posted += 1
                    batch.append(timeline[i][2])
                    i += 1
                if batch:
                    _post(client, batch, progress)
                    shown.update(len(batch))
                now = time.monotonic()
                if drawn:
                    admitted = sum(1 for p in patients if p.posted)
                    report = _report(progress, outputs, admitted, len(patients), sim_h)
                    shown.set_postfix_str(report, refresh=False)
                elif not args.quiet and now >= next_report:
                    admitted = sum(1 for p in patients if p.posted)
                    print(_report(progress, outputs, admitted, len(patients), sim_h), flush=True)
                    next_report = now + 5.0
                if i < len(timeline):
                    wait_until = started + timeline[i][0] * 3600.0 / args.speedup
                    left = args.max_seconds - (now - started)
                    time.sleep(max(0.0, min(tick, wait_until - time.monotonic(), left)))
        except KeyboardInterrupt:
            shown.close()
            print("interrupted", flush=True)
        except httpx.HTTPError as exc:
            shown.close()
            print(f"riskstream demo: lost the service at {args.url}: {exc}", file=sys.stderr)
            return 1
        finally:
            shown.close()
        sim_h = (time.monotonic() - started) * args.speedup / 3600.0
        admitted = sum(1 for p in patients if p.posted)
        print("done: " + _report(progress, outputs, admitted, len(patients), sim_h), flush=True)
        for message in progress.errors[:5]:
            print(f"  rejected: {message}", file=sys.stderr)
        return 0 if not progress.rejected else 1
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
