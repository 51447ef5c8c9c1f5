"""Password hashing: bcrypt over a SHA-256 pre-hash. Pure functions.

bcrypt reads at most 72 bytes. Hashing the SHA-256 digest instead (as Django's
BCryptSHA256PasswordHasher does) lets every character of a long password count. The
digest is base64-encoded so it has no NUL byte for bcrypt to stop at.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import secrets

import bcrypt

PREFIX = "bcrypt_sha256$"
MIN_LENGTH = 8
MAX_LENGTH = 1000


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest())


def hash_password(password: str, *, rounds: int) -> str:
    return PREFIX + bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode()


def verify_password(password: str, stored_hash: str) -> bool:
    """True when `password` matches; False for a mismatch or an unusable hash."""
    if not stored_hash.startswith(PREFIX):
        return False
    try:
        return bcrypt.checkpw(_prehash(password), stored_hash[len(PREFIX) :].encode())
    except ValueError:
        return False


# A stored hash that no password matches (Django's `set_unusable_password`): after "Not
# you?", the old password must stop working before a new one is chosen. Random, so that
# a link made over it dies when it is replaced again.
UNUSABLE_PREFIX = "!"


def unusable_hash() -> str:
    return UNUSABLE_PREFIX + secrets.token_urlsafe(24)


def is_usable(stored_hash: str) -> bool:
    return stored_hash.startswith(PREFIX)


@functools.cache
def dummy_hash(rounds: int) -> str:
    """A hash nobody's password matches, checked when the email is unknown so that a
    wrong email costs the same time as a wrong password."""
    return hash_password("no account has this password", rounds=rounds)
