"""Helpers of the fault drills (tests/integration/test_faults.py): the environment of a real
server process, what the SQL log holds of the answered scores, and which worker process holds a
client's connection."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from riskstream.adapters.sql.score_log import SqlScoreLog


def server_env(
    *, redis_url: str, database_url: str, key_prefix: str, model_dir: Path, data_dir: Path
) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "KEY_PREFIX": key_prefix,
        "MODEL_DIR": str(model_dir),
        "DATA_DIR": str(data_dir),
        # a killed or timed-out drainer's entries are taken over soon, so deadlines stay short
        "OUTBOX_CLAIM_IDLE_MS": "500",
        # the drills are about faults, not keys (tests/integration/test_auth_server.py is)
        "AUTH": "false",
    }


Answered = Mapping[str, Mapping[str, int]]  # entity -> event id -> step it was answered with


async def missing_from_sql(
    log: SqlScoreLog, answered: Answered, timeout: float
) -> list[tuple[str, str, int]]:
    """Poll the SQL log until it holds every answered (entity, event id, step) or the deadline
    passes; what is still missing then (empty: all there)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting = {entity: dict(events) for entity, events in answered.items() if events}
    while True:
        for entity in list(waiting):
            logged = await log.history(entity, since=None, after_step=None, limit=100_000)
            have = {(s.event_id, s.step) for s in logged}
            if all((e, step) in have for e, step in waiting[entity].items()):
                del waiting[entity]
        if not waiting or loop.time() > deadline:
            return [
                (entity, e, step)
                for entity, events in waiting.items()
                for e, step in events.items()
            ]
        await asyncio.sleep(0.25)


async def logged_steps(log: SqlScoreLog, entity: str) -> list[tuple[int, str]]:
    """(step, event id) of every score of the entity in the SQL log, by step."""
    logged = await log.history(entity, since=None, after_step=None, limit=100_000)
    return sorted((s.step, s.event_id) for s in logged)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found += [int(p) for p in text.split()]
    return found


def worker_pids(server_pid: int) -> list[int]:
    """The uvicorn worker processes of a ``serve --workers N`` (multiprocessing spawns them;
    the resource tracker is no worker)."""
    found = []
    for pid in children(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            found.append(pid)
    return found


def _tcp_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of the established connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state != "01":  # ESTABLISHED
                continue
            if int(local.rsplit(":", 1)[1], 16) == server_port and (
                int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return inode
    return None


def serving_pid(pids: list[int], server_port: int, client_port: int) -> int | None:
    """Which of ``pids`` accepted the connection from 127.0.0.1:``client_port``."""
    inode = _tcp_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None
