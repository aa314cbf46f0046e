"""``riskstream keys``: create, list and revoke API keys (docs/auth.md).

Uses the same ``DATABASE_URL``/``DATA_DIR`` as ``serve`` and migrates first, like ``serve``.
``create`` prints the secret once, alone on the last line of stdout (what it did goes to
stderr), so ``KEY=$(riskstream keys create ...)`` captures just the secret. Nothing else ever
shows a secret or a hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from riskstream.core.errors import RiskstreamError
from riskstream.core.keys import KeyInfo, Scope, new_key
from riskstream.core.ports import KeyStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riskstream keys",
        description="Create, list and revoke API keys, in the database `riskstream serve` uses "
        "(same DATABASE_URL / DATA_DIR). See docs/auth.md.",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; prints its secret once")
    create.add_argument("--name", required=True, help="unique; audit records name the key by it")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[scope.value for scope in Scope],
        help="repeat for several; admin implies the others",
    )
    listing = actions.add_parser("list", help="every key: name, scopes, times, revoked")
    listing.add_argument("--json", action="store_true", help="as a JSON array")
    revoke = actions.add_parser("revoke", help="revoke a key (within AUTH_CACHE_S everywhere)")
    revoke.add_argument("name", help="the key's name")
    return parser


def _time(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(key: KeyInfo) -> dict[str, object]:
    return {
        "name": key.name,
        "scopes": sorted(scope.value for scope in key.scopes),
        "created_at": _time(key.created_at),
        "last_used_at": _time(key.last_used_at),
        "revoked": key.revoked,
    }


def _table(keys: list[KeyInfo]) -> str:
    header = ("NAME", "SCOPES", "CREATED", "LAST USED", "REVOKED")
    rows = [header] + [
        (
            key.name,
            ",".join(sorted(scope.value for scope in key.scopes)),
            _time(key.created_at) or "",
            _time(key.last_used_at) or "never",
            "yes" if key.revoked else "no",
        )
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


async def _act(args: argparse.Namespace, keys: KeyStore) -> int:
    if args.action == "create":
        made = new_key(args.name, args.scope)
        await keys.create(made.key)
        scopes = ", ".join(sorted(scope.value for scope in made.key.scopes))
        print(
            f"created API key {made.key.name!r} ({scopes}); its secret follows and is shown "
            "only this once:",
            file=sys.stderr,
        )
        print(made.secret)
        return 0
    if args.action == "list":
        listed = await keys.list()
        print(json.dumps([_row(key) for key in listed]) if args.json else _table(listed))
        return 0
    if await keys.revoke(args.name):
        print(f"revoked API key {args.name!r}", file=sys.stderr)
        return 0
    print(f"riskstream keys: no key named {args.name!r}", file=sys.stderr)
    return 1


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))

    from riskstream.adapters.sql.database import create_engine, migrate
    from riskstream.adapters.sql.keys import SqlKeyStore
    from riskstream.settings import Settings

    url = Settings().resolved_database_url()
    migrate(url)

    async def run() -> int:
        engine = create_engine(url)
        try:
            return await _act(args, SqlKeyStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except RiskstreamError as error:
        print(f"riskstream keys: {error.message}", file=sys.stderr)
        return 1
