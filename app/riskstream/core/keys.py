"""API keys: scopes, the principal a key stands for, and the secret's format and hash.

A secret is ``rsk_<key id>_<random>``: the key id (16 hex digits, not secret by itself) finds the
stored key with one indexed lookup, and the random part (256 bits) is what proves possession. Only
a salted scrypt hash of the whole secret is stored. 256 random bits cannot be guessed, so the
KDF is not what protects a key; it keeps a leaked database from giving out usable secrets and it
costs ~50 ms, which is why a verdict is cached in-process (``riskstream.core.auth``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from riskstream.core.domain import ID_PATTERN
from riskstream.core.errors import InvalidInput

SECRET_PREFIX = "rsk"
_KEY_ID_HEX = 16
_SECRET_RE = re.compile(rf"^{SECRET_PREFIX}_([0-9a-f]{{{_KEY_ID_HEX}}})_[A-Za-z0-9_-]{{43}}$")
# Key names go into logs, audit rows and Redis keys: the same characters as entity ids.
NAME_PATTERN = ID_PATTERN
MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(NAME_PATTERN)

# scrypt with the parameters its paper gives for interactive logins: 16 MiB, ~50 ms.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**14, 8, 1, 32


class Scope(StrEnum):
    INGEST = "ingest"  # POST events, single and bulk
    READ = "read"  # every read route, the stream, the dashboard's data, /metrics
    ADMIN = "admin"  # DELETE entities, key management; implies the others


ALL_SCOPES = frozenset(Scope)


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scopes named by a person (CLI, admin API): an unknown name is an error."""
    scopes: set[Scope] = set()
    for value in values:
        try:
            scopes.add(Scope(value))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInput(
                f"unknown scope {value!r}; scopes are {known}", field="scope"
            ) from None
    if not scopes:
        raise InvalidInput("a key needs at least one scope", field="scope")
    return frozenset(scopes)


def stored_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scopes read back from storage: a name this version does not know grants nothing."""
    known = {s.value for s in Scope}
    return frozenset(Scope(v) for v in values if v in known)


def check_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise InvalidInput(
            f"a key name is 1 to {MAX_NAME_LENGTH} characters matching {NAME_PATTERN}",
            field="name",
        )
    return name


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the key's name (what audit records) and what it may do."""

    name: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as stored: what verifying a secret needs. Never holds the secret."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    secret_hash: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed to an operator: no secret, no hash. Times in epoch seconds."""

    name: str
    scopes: frozenset[Scope]
    created_at: float
    last_used_at: float | None
    revoked: bool


def key_id_of(secret: str) -> str | None:
    """The key id inside a well-formed secret, else None (such a secret needs no lookup)."""
    match = _SECRET_RE.match(secret)
    return match.group(1) if match else None


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$<salt>$<hash>`` (base64): self-describing, so the cost can change later."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_LEN
    )
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_secret(secret: str, secret_hash: str) -> bool:
    """Whether ``secret`` hashes to ``secret_hash`` (constant-time compare). ~50 ms of CPU."""
    try:
        kind, n, r, p, salt, expected = secret_hash.split("$")
        if kind != "scrypt":
            return False
        want = _unb64(expected)
        got = hashlib.scrypt(
            secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the record to store, and the secret to show once."""

    key: StoredKey
    secret: str


def new_key(name: str, scopes: Iterable[str]) -> NewKey:
    key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    secret = f"{SECRET_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    key = StoredKey(
        key_id=key_id,
        name=check_name(name),
        scopes=parse_scopes(scopes),
        secret_hash=hash_secret(secret),
        revoked=False,
    )
    return NewKey(key, secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
