"""API-key schemas and the role → permission table."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlplatform.units import check_rate


class Role(StrEnum):
    ADMIN = "admin"
    EDITOR = "editor"
    PREDICTOR = "predictor"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ = "read"
    PREDICT = "predict"
    WRITE = "write"
    ADMIN = "admin"


# Each role holds the permissions of the roles below it.
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.PREDICTOR: frozenset({Permission.READ, Permission.PREDICT}),
    Role.EDITOR: frozenset({Permission.READ, Permission.PREDICT, Permission.WRITE}),
    Role.ADMIN: frozenset(Permission),
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,127}$")


class Principal(BaseModel):
    """Who is calling: the key's id (or `bootstrap`/`anonymous`), owner, role and own rate limit."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    owner: str
    role: Role
    rate_limit: str | None = None

    def can(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="what the key is for, e.g. 'fraud-service prod'")
    role: Role
    owner: str = Field(description="the user the key belongs to; created when new")
    expires_at: datetime | None = None
    expires_in_days: int | None = Field(None, ge=1, le=3650)
    rate_limit: str | None = Field(None, description="this key's own limit, e.g. 200/second")

    @field_validator("name", "owner")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "1-128 characters: letters, digits, space and . _ @ -, starting with a letter or digit"
            )
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        return None if value is None else check_rate(value)

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("must include a timezone, e.g. 2027-01-01T00:00:00Z")
        try:  # stored in UTC: 9999-12-31T23:59:59-01:00 has no UTC time a datetime can hold
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range: at most 9999-12-31T23:59:59Z") from None


class ApiKeyRead(BaseModel):
    id: str
    name: str
    role: Role
    owner: str
    prefix: str = Field(description="the first characters of the key, to recognise it")
    rate_limit: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="the key itself: shown once, never stored")
