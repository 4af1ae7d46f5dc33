"""Key material and roles: format, hashing, constant-time comparison, the permission table."""

from __future__ import annotations

import base64
import hashlib

import pytest
from pydantic import ValidationError

from mlplatform.auth.keys import display_prefix, generate_key, hash_key, same_hash
from mlplatform.auth.schemas import PERMISSIONS, ApiKeyCreate, Permission, Role


def test_keys_are_prefixed_32_random_bytes() -> None:
    key = generate_key()
    assert key.startswith("mlp_")
    raw = base64.urlsafe_b64decode(key[4:] + "=" * (-len(key[4:]) % 4))
    assert len(raw) == 32
    assert len({generate_key() for _ in range(1000)}) == 1000


def test_hash_is_sha256_hex_and_comparison_is_exact() -> None:
    key = generate_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert same_hash(hash_key(key), hash_key(key))
    assert not same_hash(hash_key(key), hash_key(key[:-1] + ("A" if key[-1] != "A" else "B")))
    assert display_prefix(key) == key[:12]


def test_roles_nest() -> None:
    assert PERMISSIONS[Role.VIEWER] == {Permission.READ}
    assert (
        PERMISSIONS[Role.VIEWER]
        < PERMISSIONS[Role.PREDICTOR]
        < PERMISSIONS[Role.EDITOR]
        < PERMISSIONS[Role.ADMIN]
    )
    assert Permission.ADMIN in PERMISSIONS[Role.ADMIN]
    assert Permission.WRITE not in PERMISSIONS[Role.PREDICTOR]


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", ""), ("owner", "../etc"), ("rate_limit", "lots"), ("expires_at", "2030-01-01T00:00:00")],
)
def test_key_requests_are_validated(field: str, value: str) -> None:
    data = {"name": "svc", "role": "viewer", "owner": "ada", field: value}
    with pytest.raises(ValidationError) as caught:
        ApiKeyCreate.model_validate(data)
    assert caught.value.errors()[0]["loc"] == (field,)
