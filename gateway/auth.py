"""API keys and the admin token: made here, stored only as hashes, compared in constant time.

The engine keeps the SHA-256 of each key (a key is 192 random bits, so a fast hash is
enough: nothing to brute-force). The admin token comes from EXCHANGE_ADMIN_TOKEN or is
generated once and kept in DATA_DIR/admin-token, readable by its owner only.
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

API_KEY_PREFIX = "ek_"
API_KEY_BYTES = 24
ADMIN_TOKEN_ENV = "EXCHANGE_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_BYTES)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def admin_token(data_dir: Path) -> str:
    """The admin token: from the environment, else the data dir's file, else a new one
    written there with mode 0600."""
    from_env = os.environ.get(ADMIN_TOKEN_ENV, "")
    if from_env:
        return from_env
    path = data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer TOKEN` header, or ""."""
    if header is None:
        return ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
