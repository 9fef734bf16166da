"""Dashboard passwords: argon2id hashes (argon2-cffi), never the password itself.

``hash_password`` checks the length rule and hashes; ``verify_password`` answers whether a password
matches a stored hash, spending the same time whether or not the user has one, so a login cannot
tell which emails exist by how long it takes.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
# Long enough for any passphrase or password manager, short enough that hashing it costs nothing.
MAX_LENGTH = 1024

_HASHER = PasswordHasher()  # argon2id with the library's maintained defaults (RFC 9106 low-memory)

#: Password checks one worker runs at once (each takes 64 MiB and a core for a moment): a flood of
#: logins waits its turn instead of exhausting memory.
CHECKS = asyncio.Semaphore(2)


class PasswordRuleError(ValueError):
    """A new password that breaks the length rule (the message says which)."""


def check_rule(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordRuleError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordRuleError(f"the password must have at most {MAX_LENGTH} characters")
    if "\x00" in password:
        raise PasswordRuleError("the password must not contain NUL characters")


def hash_password(password: str) -> str:
    """The argon2id hash of a new password (raises ``PasswordRuleError`` when it breaks the rule)."""
    check_rule(password)
    return _HASHER.hash(password)


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return _HASHER.hash("decoy password for users without one")


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches `stored_hash`; always ``False`` (after the same work) without one."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash or _decoy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's (rehash at the next login)."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
