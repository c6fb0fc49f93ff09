"""Salted, repeatable pseudonyms for patients: HMAC-SHA256(site salt, identifier).

The salt is a random 32-byte secret kept in one site file, created once with mode 0600 and reused, so
that re-ingesting the same data gives the same pseudonyms while nobody without the file can link a
pseudonym back to a PatientID by hashing guesses. Losing the file only means new pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from common.errors import ConfigError

SALT_ENV = "SARCOFED_SALT_FILE"
PREFIX = "SF-"


def default_salt_path() -> Path:
    """``$SARCOFED_SALT_FILE``, else ``$XDG_CONFIG_HOME/sarcofed/pseudonym.salt`` (``~/.config``)."""
    if os.environ.get(SALT_ENV):
        return Path(os.environ[SALT_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "sarcofed" / "pseudonym.salt"


def load_or_create_salt(path: str | Path | None = None) -> bytes:
    """Read the site salt, creating it (0600, parents 0700) on first use. Returns 32 bytes."""
    path = Path(path) if path is not None else default_salt_path()
    if path.exists():
        text = path.read_text().strip()
        try:
            salt = bytes.fromhex(text)
        except ValueError:
            salt = b""
        if len(salt) < 16:
            raise ConfigError(
                f"pseudonym salt file {path} is not 32+ hex-encoded bytes; restore it from backup "
                "(deleting it changes every pseudonym)"
            )
        return salt
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    salt = secrets.token_bytes(32)
    # O_EXCL: two processes racing to create it never both write.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_salt(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(salt.hex() + "\n")
    return salt


def pseudonym(identifier: str, salt: bytes, length: int = 16) -> str:
    """``SF-`` + the first ``length`` hex digits of HMAC-SHA256(salt, identifier)."""
    digest = hmac.new(salt, str(identifier).strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:length]


class Pseudonymiser:
    """Holds the site salt once; ``pz(identifier)`` -> pseudonym."""

    def __init__(self, salt_file: str | Path | None = None) -> None:
        self.salt_file = Path(salt_file) if salt_file is not None else default_salt_path()
        self._salt = load_or_create_salt(self.salt_file)

    def __call__(self, identifier: str) -> str:
        return pseudonym(identifier, self._salt)

    def fraction(self, identifier: str) -> float:
        """A stable number in [0, 1) per identifier (for deterministic holdout splits)."""
        digest = hmac.new(self._salt, b"split:" + str(identifier).encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
