"""Uploaded tables: CSV or Parquet by content, limits enforced early, column statistics, clear refusals."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.datasets import tabular
from mlplatform.datasets.service import check_name, storage_key
from mlplatform.errors import InvalidInput
from mlplatform.stores.artifacts import check_key


def read(folder: Path, data: bytes, *, max_rows: int = 1000, max_bytes: int = 10**8) -> tabular.TableProfile:
    path = folder / "upload"
    received = tabular.receive(io.BytesIO(data), path, max_bytes=max_bytes)
    return tabular.profile(path, received.format, max_rows=max_rows)


def parquet_bytes(table: pa.Table, **options: object) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def test_receive_hashes_counts_and_tells_csv_from_parquet(tmp_path: Path) -> None:
    csv = tabular.receive(io.BytesIO(b"a\n1\n"), tmp_path / "c", max_bytes=100)
    assert (csv.format, csv.size) == ("csv", 4)
    assert csv.sha256 == hashlib.sha256(b"a\n1\n").hexdigest()
    data = parquet_bytes(pa.table({"x": [1, 2]}))
    parquet = tabular.receive(io.BytesIO(data), tmp_path / "p", max_bytes=10**6)
    assert parquet.format == "parquet" and (tmp_path / "p").read_bytes() == data


def test_csv_statistics(tmp_path: Path) -> None:
    data = b"age,income,city,flag\n30,1.5,paris,true\n40,,berlin,false\n50,4.5,,true\n"
    found = read(tmp_path, data)
    assert found.rows == 3
    age, income, city, flag = found.columns
    assert (age.type, age.min, age.max, age.mean, age.nulls) == ("int64", 30, 50, 40.0, 0)
    assert (income.type, income.min, income.max, income.mean, income.nulls) == ("double", 1.5, 4.5, 3.0, 1)
    assert (city.type, city.nulls, city.min, city.mean) == ("string", 1, None, None)
    assert (flag.type, flag.min) == ("bool", None)


def test_a_column_that_changes_type_in_a_later_block_is_read_wider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tabular, "CSV_BLOCK_SIZE", 64)
    data = b"a,b,c\n" + b"1,2,\n" * 40 + b"3.5,x,7\n"
    a, b, c = read(tmp_path, data).columns
    assert (a.type, a.max) == ("double", 3.5)
    assert b.type == "string" and b.mean is None
    assert (c.type, c.nulls, c.min) == ("int64", 40, 7)


def test_csv_parsing_stops_once_the_row_limit_is_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tabular, "CSV_BLOCK_SIZE", 256)
    # Far past the limit comes a broken row: the reader never gets there.
    data = b"a,b\n" + b"1,2\n" * 5000 + b"1,2,3\n"
    with pytest.raises(tabular.TooLargeError) as raised:
        read(tmp_path, data, max_rows=100)
    assert (raised.value.unit, raised.value.limit) == ("rows", 100)
    assert read(tmp_path, b"a\n" + b"1\n" * 100, max_rows=100).rows == 100


def test_parquet_rows_come_from_the_footer_before_any_data_is_read(tmp_path: Path) -> None:
    table = pa.table({"x": list(range(500)), "y": [float(i) for i in range(500)]})
    data = bytearray(parquet_bytes(table, compression="none"))
    data[100:400] = b"\xff" * 300  # ruin the data pages, keep the footer
    with pytest.raises(tabular.TooLargeError):
        read(tmp_path, bytes(data), max_rows=499)
    with pytest.raises(tabular.TableError, match="not a readable Parquet file"):
        read(tmp_path, bytes(data), max_rows=500)


def test_parquet_statistics_skip_nulls_nan_and_infinities(tmp_path: Path) -> None:
    table = pa.table(
        {
            "n": pa.array([1, None, 3], pa.int32()),
            "f": [1.0, math.nan, math.inf],
            "s": ["a", None, None],
        }
    )
    found = read(tmp_path, parquet_bytes(table))
    n, f, s = found.columns
    assert found.rows == 3
    assert (n.type, n.nulls, n.min, n.max, n.mean) == ("int32", 1, 1, 3, 2.0)
    assert (f.nulls, f.min, f.max, f.mean) == (0, 1.0, 1.0, 1.0)
    assert (s.type, s.nulls) == ("string", 2)


def test_bytes_past_the_limit_stop_the_copy(tmp_path: Path) -> None:
    with pytest.raises(tabular.TooLargeError) as raised:
        tabular.receive(io.BytesIO(b"x" * 5000), tmp_path / "big", max_bytes=4096)
    assert (raised.value.unit, raised.value.limit) == ("bytes", 4096)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "the file is empty"),
        (b"a,b\n1,2,3\n", "Expected 2 columns, got 3"),
        (b"a,b\n1,caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
        (b"a,b\n1,\xc3", "ends inside a multi-byte character"),
        (b"a,b\n1,\x00\n", "binary data (a NUL byte at offset 6)"),
        (b"a,,c\n1,2,3\n", "column 2 has no name"),
        (b"a,b,a\n1,2,3\n", "column name 'a' appears twice"),
        (b"\n\n", "not a readable CSV file"),
        (b"PAR1 but not really", "not a readable Parquet file"),
    ],
)
def test_unreadable_tables_say_why(tmp_path: Path, data: bytes, problem: str) -> None:
    with pytest.raises(tabular.TableError) as raised:
        read(tmp_path, data)
    assert problem in str(raised.value)


def test_a_table_without_columns_is_refused(tmp_path: Path) -> None:
    with pytest.raises(tabular.TableError, match="no columns"):
        read(tmp_path, parquet_bytes(pa.table({})))


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "..", ".hidden", "UPPER", "sp ace", "x\n", "", "a" * 129, "é"]
)
def test_dataset_names_outside_the_allow_list_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_name(name)
    assert raised.value.details[0]["field"] == "name"


def test_storage_keys_are_generated_and_pass_the_key_check() -> None:
    key = storage_key("churn.v2_x-1", "0190abcdef0123456789abcdef", "parquet")
    assert key == "datasets/churn.v2_x-1/0190abcdef0123456789abcdef/data.parquet"
    assert check_key(key) == key
