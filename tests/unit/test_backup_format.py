"""The backup file format: every column we have is carried, values keep their type, bad lines are refused;
backup settings name the key of a bad value."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlplatform.backups.codec import column_kind, row_decoder, row_encoder
from mlplatform.backups.manifest import BACKUP_ID
from mlplatform.backups.service import join_url, new_backup_id
from mlplatform.config import ConfigError, load_settings
from mlplatform.tables import metadata


def test_every_column_of_every_table_has_a_kind() -> None:
    kinds = {column_kind(c) for t in metadata.sorted_tables for c in t.columns}
    assert kinds == {"string", "integer", "float", "boolean", "datetime", "json", "binary"}


def test_values_round_trip_with_their_types() -> None:
    kinds = ["string", "integer", "float", "float", "float", "boolean", "datetime", "json", "json", "binary"]
    names = [f"c{i}" for i in range(len(kinds))]
    paris = timezone(timedelta(hours=2))
    row = [
        'naïve ☃ "quoted"\n',
        2**62,
        math.nan,
        -math.inf,
        0.1 + 0.2,
        False,
        datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=paris),
        '{"a": [1, 2.5, null]}',
        "null",  # a JSON null: not SQL NULL
        bytes(range(256)),
    ]
    line = row_encoder(kinds)(row)
    assert line.endswith("\n") and line.count("\n") == 1
    back = row_decoder(names, kinds)(line)
    assert back["c0"] == row[0] and back["c1"] == 2**62 and math.isnan(back["c2"]) and back["c3"] == -math.inf
    assert back["c4"] == 0.1 + 0.2 and back["c5"] is False
    assert back["c6"] == row[6] and back["c6"].tzinfo == UTC
    assert back["c7"] == row[7] and back["c8"] == "null" and back["c9"] == row[9]
    nulls = row_decoder(names, kinds)(row_encoder(kinds)([None] * len(kinds)))
    assert set(nulls.values()) == {None}


def test_naive_times_from_sqlite_are_utc() -> None:
    line = row_encoder(["datetime"])([datetime(2024, 1, 2, 3, 4, 5)])
    assert line == '["2024-01-02T03:04:05+00:00"]\n'


@pytest.mark.parametrize(
    ("kinds", "line", "problem"),
    [
        (["integer"], '["1"]', "not an integer"),
        (["integer"], "[true]", "not an integer"),
        (["boolean"], "[1]", "not true or false"),
        (["datetime"], '["2024-01-02T03:04:05"]', "no UTC offset"),
        (["json"], '["{not json"]', "Expecting"),
        (["binary"], '["***"]', "base64"),
        (["string", "string"], '["only one"]', "a list of 2 values"),
    ],
)
def test_a_malformed_line_is_refused(kinds: list[str], line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        row_decoder([f"c{i}" for i in range(len(kinds))], kinds)(line)


def test_ids_sort_by_time_and_urls_keep_their_query() -> None:
    early = new_backup_id(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert BACKUP_ID.match(early) and early.startswith("20240102T030405.000Z-")
    assert early < new_backup_id(datetime(2024, 1, 2, 3, 4, 5, 1000, tzinfo=UTC))  # a millisecond later
    assert join_url("s3://b/p?endpoint=http://h:1", "backups") == "s3://b/p/backups?endpoint=http://h:1"
    assert join_url("file://./data/artifacts/", "backups") == "file://./data/artifacts/backups"


@pytest.mark.parametrize(
    ("env", "key", "problem"),
    [
        ({"MLPLATFORM_BACKUP__RETENTION": "-1"}, "backup.retention", "greater than or equal to 0"),
        ({"MLPLATFORM_BACKUP__SCHEDULE_SECONDS": "daily"}, "backup.schedule-seconds", "integer"),
        ({"MLPLATFORM_BACKUP__LOCATION": "ftp://host/x"}, "backup.location", "file://PATH or s3://"),
        ({"MLPLATFORM_BACKUP__WITH_LOGS": "maybe"}, "backup.with-logs", "boolean"),
    ],
)
def test_bad_backup_settings_name_the_key(
    tmp_path: Path, env: dict[str, str], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env, config_dir=tmp_path)
    assert key in str(caught.value) and problem in str(caught.value)


def test_the_shipped_configuration_schedules_nothing() -> None:
    settings = load_settings(environ={}, config_dir=Path(__file__).parents[2] / "config")
    assert settings.backup.schedule_seconds == 0 and settings.backup.retention == 7
    assert settings.backup.location is None and settings.backup.with_logs is False
