"""The artifact key allow-list: known attacks refused, and no accepted key can escape its root."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlplatform.stores.artifacts.keys import (
    MAX_KEY_LENGTH,
    MAX_SEGMENT_LENGTH,
    InvalidKeyError,
    check_key,
)

SEGMENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,30}", fullmatch=True)
VALID_KEY = st.lists(SEGMENT, min_size=1, max_size=8).map("/".join)


@pytest.mark.parametrize(
    "key",
    [
        "model.skops",
        "models/iris/3/model.skops",
        "datasets/d-1/part=0001/data.parquet",
        "backups/2024-01-01T00.00.00/db.dump",
        "a" * MAX_SEGMENT_LENGTH,
        "/".join(["a" * 100] * 10),
        "a..b",
        "v1.2.3",
    ],
)
def test_accepts_ordinary_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("../x", "'..' segments"),
        ("a/../../b", "'..' segments"),
        ("..", "'..' segments"),
        (".", "'.' segments"),
        ("a/./b", "'.' segments"),
        ("/etc/passwd", "relative"),
        ("a//b", "empty path segment"),
        ("a/", "empty path segment"),
        ("", "empty"),
        ("%2e%2e/x", "'%'"),
        ("a%2fb", "'%'"),
        ("a\\b", "'\\\\'"),
        ("..\\x", "'\\\\'"),
        ("é", "'é'"),
        ("models/caf\u00e9", "'é'"),
        ("a\u2215b", "'\u2215'"),
        ("a\x00b", "'\\x00'"),
        ("a\nb", "'\\n'"),
        ("a\n", "'\\n'"),
        ("a b", "' '"),
        ("~/x", "'~'"),
        ("C:/x", "':'"),
        (".hidden", "must start with a letter or digit"),
        ("-rf", "must start with a letter or digit"),
        ("a" * (MAX_SEGMENT_LENGTH + 1), f"longer than {MAX_SEGMENT_LENGTH}"),
        ("/".join(["a" * 200] * 6), f"longer than {MAX_KEY_LENGTH}"),
        ("x" * 100_000, f"longer than {MAX_KEY_LENGTH}"),
    ],
)
def test_refuses_attacks_and_says_why(key: str, problem: str) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        check_key(key)
    message = str(caught.value)
    assert message.startswith("artifact key ")
    assert problem in message


def test_invalid_key_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="artifact key"):
        check_key("../x")


@pytest.mark.parametrize("prefix", ["", "models/", "models/iris", "models/iris/", "m"])
def test_prefixes_may_be_empty_or_end_with_a_slash(prefix: str) -> None:
    assert check_key(prefix, allow_prefix=True) == prefix


@pytest.mark.parametrize("prefix", ["/", "../", "a//", "//", "/models/", "models/../", "é/"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(prefix, allow_prefix=True)


@pytest.mark.parametrize("key", ["", "models/"])
def test_keys_are_not_prefixes(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(key)


@given(VALID_KEY)
def test_generated_valid_keys_are_accepted(key: str) -> None:
    assert check_key(key) == key


@given(st.text(max_size=60))
def test_no_accepted_key_escapes_its_root(key: str) -> None:
    try:
        check_key(key)
    except InvalidKeyError:
        return
    segments = key.split("/")
    assert not key.startswith("/")
    assert ".." not in segments and "." not in segments and "" not in segments
    assert key.isascii() and key.isprintable() and "\\" not in key and "%" not in key
    normalized = posixpath.normpath(posixpath.join("/root", key))
    assert normalized == f"/root/{key}"


@given(
    st.lists(st.sampled_from(["a", "..", ".", "", "b.c", "%2e", "\\", "\x00", "é"]), min_size=1, max_size=6)
)
def test_keys_built_from_dangerous_parts_never_escape(parts: list[str]) -> None:
    key = "/".join(parts)
    try:
        check_key(key)
    except InvalidKeyError:
        return
    assert posixpath.normpath(posixpath.join("/root", key)).startswith("/root/")
    assert all(part in ("a", "b.c") for part in parts)
