"""Password hashing as plain functions: bcrypt over a SHA-256 pre-hash, at 4 rounds."""

from __future__ import annotations

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp import passwords
from webapp.passwords import PREFIX, dummy_hash, hash_password, verify_password

ROUNDS = 4
PASSWORD = "correct horse battery staple"
GENUINE = hash_password(PASSWORD, rounds=ROUNDS)


def test_round_trip():
    stored = hash_password(PASSWORD, rounds=ROUNDS)

    assert stored.startswith(PREFIX + "$2b$04$")
    assert verify_password(PASSWORD, stored) is True


def test_hashes_are_salted():
    first, second = hash_password(PASSWORD, rounds=ROUNDS), hash_password(PASSWORD, rounds=ROUNDS)

    assert first != second
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)


@pytest.mark.parametrize(
    "attempt",
    ["", "correct horse battery stapl", "correct horse battery staple ", "Correct horse battery staple", "x"],
    ids=repr,
)
def test_wrong_password(attempt):
    assert verify_password(attempt, GENUINE) is False


@pytest.mark.parametrize(
    ("stored", "presented"),
    [
        ("x" * 72 + "A", "x" * 72 + "B"),
        ("\u00e9" * 36 + "1", "\u00e9" * 36 + "2"),  # 72 bytes of UTF-8, then a difference
        ("y" * 100 + "tail-one", "y" * 100 + "tail-two"),
    ],
    ids=["ascii", "two-byte characters", "long"],
)
def test_bytes_after_the_72nd_count(stored, presented):
    # bcrypt reads 72 bytes at most (older versions dropped the rest silently; bcrypt 5
    # raises): these two are one password to bcrypt alone, and two to the pre-hash.
    assert stored.encode()[:72] == presented.encode()[:72]
    stored_hash = hash_password(stored, rounds=ROUNDS)

    assert verify_password(stored, stored_hash) is True
    assert verify_password(presented, stored_hash) is False


def test_password_of_1000_characters():
    password = "p\u00e4ssw\u00f6rd " * 110 + "0123456789"
    assert len(password) == passwords.MAX_LENGTH
    stored = hash_password(password, rounds=ROUNDS)

    assert verify_password(password, stored) is True
    assert verify_password(password[:-1] + "8", stored) is False


def test_non_ascii_password():
    password = "\u043f\u0430\u0440\u043e\u043b\u044c \u5bc6\u7801 \U0001f511 \u00e9t\u00e9"
    stored = hash_password(password, rounds=ROUNDS)

    assert verify_password(password, stored) is True
    assert verify_password(password.replace("\u00e9", "e"), stored) is False


def test_lone_surrogate():
    # A form can submit one; surrogatepass encodes each surrogate distinctly, where an
    # error handler such as "replace" would turn both of these into the same "?".
    stored = hash_password("pass\ud800word", rounds=ROUNDS)

    assert verify_password("pass\ud800word", stored) is True
    assert verify_password("pass\udc00word", stored) is False


def test_nul_byte_in_password():
    stored = hash_password("before\x00after", rounds=ROUNDS)

    assert verify_password("before\x00after", stored) is True
    assert verify_password("before\x00other", stored) is False
    assert verify_password("before", stored) is False


def test_hash_without_prefix():
    assert verify_password(PASSWORD, GENUINE.removeprefix(PREFIX)) is False


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "under our prefix"])
def test_raw_bcrypt_hash_of_the_password(prefix):
    # bcrypt of the password itself, not of its pre-hash: not a hash this module made.
    raw = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(ROUNDS)).decode()
    assert bcrypt.checkpw(PASSWORD.encode(), raw.encode())

    assert verify_password(PASSWORD, prefix + raw) is False


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        PREFIX,
        PREFIX + "garbage",
        PREFIX + "$2b$04$",
        GENUINE[:-1],
        GENUINE[:40],
        GENUINE + "x",
        PREFIX + "$2b$04$" + "!" * 53,
        PREFIX + "\u00e9" * 60,
        PREFIX + "\x00",
        GENUINE[:-1] + "\ud800",
        "pbkdf2_sha256$600000$salt$hash",
    ],
    ids=[
        "empty",
        "no prefix",
        "prefix only",
        "prefix and junk",
        "bcrypt header only",
        "truncated by one",
        "truncated",
        "one character too many",
        "invalid salt characters",
        "non-ASCII",
        "NUL",
        "lone surrogate",
        "another scheme",
    ],
)
def test_garbage_hash(stored):
    assert verify_password(PASSWORD, stored) is False


@pytest.mark.parametrize("attempt", ["", PASSWORD, "password", "x" * 1000, "\ud800"], ids=repr)
def test_dummy_hash_matches_no_password(attempt):
    assert dummy_hash(ROUNDS).startswith(PREFIX + "$2b$04$")
    assert verify_password(attempt, dummy_hash(ROUNDS)) is False


def test_dummy_hash_is_cached_per_rounds():
    assert dummy_hash(ROUNDS) is dummy_hash(ROUNDS)
    # One step above the minimum, to show the cost is per argument, not per process.
    assert dummy_hash(ROUNDS + 1).startswith(PREFIX + "$2b$05$")
    assert dummy_hash(ROUNDS + 1) is dummy_hash(ROUNDS + 1)


@settings(max_examples=20, deadline=None)
@given(password=st.text(st.characters() | st.characters(categories=["Cs"]), max_size=80))
def test_verify_accepts_the_hashed_password_and_no_other(password):
    stored = hash_password(password, rounds=ROUNDS)

    assert verify_password(password, stored) is True
    assert verify_password(password + "\x00", stored) is False
