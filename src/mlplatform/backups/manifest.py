"""The manifest: what a backup holds (tables, columns, row counts, checksums) and where it came from.

Written last, so a backup without one is incomplete; a restore trusts nothing the manifest does not vouch for.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlplatform.backups.codec import KINDS

FORMAT = "mlplatform-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Backup ids sort by time, to the millisecond: 20250102T030405.678Z-<8 hex>.
BACKUP_ID = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Tables holding the prediction log; left out unless asked for (they may be most of the database).
LOG_TABLES = ("prediction_logs", "prediction_batches")


class BackupError(Exception):
    """A backup or restore refused or failed; the message says why and what to do."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnEntry(_Model):
    name: str
    kind: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a column name")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"{value!r} is not one of {list(KINDS)}")
        return value


class TableEntry(_Model):
    name: str
    file: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    columns: list[ColumnEntry] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a table name")
        return value

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_]{0,62}\.jsonl\.gz$", value):
            raise ValueError(f"{value!r} is not a table file name")
        return value


class Manifest(_Model):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    id: str = Field(pattern=BACKUP_ID.pattern)
    created_at: datetime
    mlplatform_version: str
    revision: str
    database: str  # the backend it was taken from: sqlite or postgresql
    with_logs: bool
    tables: list[TableEntry]
    skipped: list[str] = []

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value != FORMAT:
            raise ValueError(f"not an mlplatform backup (format {value!r})")
        return value

    @field_validator("format_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(f"format version {value} is not {FORMAT_VERSION}: use the matching mlplatform")
        return value

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    def dumps(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def loads(cls, data: bytes, *, where: str) -> Manifest:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "manifest"
            raise BackupError(f"{where}: the manifest is not valid ({field}: {first['msg']})") from None
