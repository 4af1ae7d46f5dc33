"""Reading an uploaded table (blocking: run it in a thread): size, format, rows within the limit, stats."""

from __future__ import annotations

import codecs
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mlplatform.datasets.schemas import ColumnRead, DatasetFormat

PARQUET_MAGIC = b"PAR1"
CHUNK = 1024 * 1024
# Arrow infers CSV column types from the first block; a row may not be longer than one block.
CSV_BLOCK_SIZE = 4 * 1024 * 1024
PARQUET_BATCH_ROWS = 65_536
# Arrow adds "Row #N: " when it reads serially (e.g. once its CPU pool is down to one thread).
_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error")


class TableError(Exception):
    """The upload is not a readable table; the message says why, for the caller."""


class TooLargeError(Exception):
    """The upload has more `unit` (rows or bytes) than `limit`."""

    def __init__(self, unit: str, limit: int) -> None:
        super().__init__(f"more than {limit} {unit}")
        self.unit = unit
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Received:
    format: DatasetFormat
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class TableProfile:
    rows: int
    columns: list[ColumnRead]


def receive(source: BinaryIO, target: Path, *, max_bytes: int) -> Received:
    """Copy `source` to `target` while hashing it, counting bytes (stopping past `max_bytes`) and checking
    that it is UTF-8 text without NUL bytes, which a CSV upload must be."""
    digest = hashlib.sha256()
    decoder: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")()
    not_text: str | None = None
    head = b""
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            if size + len(chunk) > max_bytes:
                raise TooLargeError("bytes", max_bytes)
            if len(head) < len(PARQUET_MAGIC):
                head += chunk[: len(PARQUET_MAGIC) - len(head)]
            if decoder is not None:
                not_text = _text_problem(decoder, chunk, size)
                decoder = None if not_text else decoder
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if size == 0:
        raise TableError("the file is empty")
    if head == PARQUET_MAGIC:
        return Received(format="parquet", size=size, sha256=digest.hexdigest())
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            not_text = "not UTF-8 text: the file ends inside a multi-byte character"
    if not_text:
        raise TableError(f"neither Parquet nor a UTF-8 CSV file: {not_text}")
    return Received(format="csv", size=size, sha256=digest.hexdigest())


def _text_problem(decoder: codecs.IncrementalDecoder, chunk: bytes, offset: int) -> str | None:
    nul = chunk.find(b"\x00")
    if nul >= 0:
        return f"binary data (a NUL byte at offset {offset + nul})"
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(chunk)
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {offset - pending + exc.start})"
    return None


def profile(path: Path, format: DatasetFormat, *, max_rows: int) -> TableProfile:
    """Rows and per-column statistics; `TooLargeError` as soon as more than `max_rows` rows are seen."""
    if format == "parquet":
        return _profile_parquet(path, max_rows)
    overrides: dict[str, pa.DataType] = {}
    while True:  # each round widens one column's type, so this ends after at most three per column
        try:
            return _profile_csv(path, max_rows, overrides)
        except _WidenError as widen:
            overrides[widen.column] = widen.to


class _WidenError(Exception):
    """A later block of the CSV does not fit the type Arrow inferred from the first: read again, wider."""

    def __init__(self, column: str, to: pa.DataType) -> None:
        super().__init__(column)
        self.column = column
        self.to = to


def _profile_csv(path: Path, max_rows: int, overrides: dict[str, pa.DataType]) -> TableProfile:
    try:
        reader = pa_csv.open_csv(
            str(path),
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_SIZE),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types=overrides, strings_can_be_null=True),
        )
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"not a readable CSV file: {_first_line(exc)}") from None
    with reader:
        columns = _columns(reader.schema)
        rows = 0
        try:
            for batch in reader:
                rows += batch.num_rows
                if rows > max_rows:
                    raise TooLargeError("rows", max_rows)
                for column, values in zip(columns, batch.columns, strict=True):
                    column.add(values)
        except pa.ArrowInvalid as exc:
            _widen_or_raise(exc, reader.schema)
        except (pa.ArrowException, OSError) as exc:
            raise TableError(f"not a readable CSV file: {_first_line(exc)}") from None
    return TableProfile(rows=rows, columns=[c.read() for c in columns])


def _widen_or_raise(exc: pa.ArrowInvalid, schema: pa.Schema) -> NoReturn:
    match = _CONVERSION_ERROR.match(str(exc))
    if match:
        field = schema.field(int(match[1]))
        if pa.types.is_null(field.type):
            raise _WidenError(field.name, pa.int64()) from None
        if pa.types.is_integer(field.type):
            raise _WidenError(field.name, pa.float64()) from None
        if not pa.types.is_string(field.type):
            raise _WidenError(field.name, pa.string()) from None
    raise TableError(f"not a readable CSV file: {_first_line(exc)}") from None


def _profile_parquet(path: Path, max_rows: int) -> TableProfile:
    try:
        file = pq.ParquetFile(str(path))  # reads the footer only
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"not a readable Parquet file: {_first_line(exc)}") from None
    with file:
        declared = file.metadata.num_rows
        if declared > max_rows:
            raise TooLargeError("rows", max_rows)
        columns = _columns(file.schema_arrow)
        rows = 0
        try:
            for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                rows += batch.num_rows
                if rows > max_rows:
                    raise TooLargeError("rows", max_rows)
                for column, values in zip(columns, batch.columns, strict=True):
                    column.add(values)
        except (pa.ArrowException, OSError) as exc:
            raise TableError(f"not a readable Parquet file: {_first_line(exc)}") from None
    if rows != declared:
        raise TableError(f"not a readable Parquet file: its footer declares {declared} rows, it holds {rows}")
    return TableProfile(rows=rows, columns=[c.read() for c in columns])


def _columns(schema: pa.Schema) -> list[_Column]:
    if not schema.names:
        raise TableError("the table has no columns")
    seen: set[str] = set()
    for index, name in enumerate(schema.names):
        if not name.strip():
            raise TableError(f"column {index + 1} has no name: the first row must be a header naming all")
        if name in seen:
            raise TableError(f"column name {name[:80]!r} appears twice in the header")
        seen.add(name)
    return [_Column(field.name, field.type) for field in schema]


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))


class _Column:
    """Null count, and for numeric columns min, max and mean over the finite values, batch by batch."""

    def __init__(self, name: str, kind: pa.DataType) -> None:
        self.name = name
        self.kind = kind
        self.nulls = 0
        self.count = 0
        self.total = 0.0
        self.low: Any = None
        self.high: Any = None

    def add(self, values: pa.Array) -> None:
        self.nulls += values.null_count
        if not _numeric(self.kind):
            return
        if pa.types.is_decimal(self.kind):
            values = values.cast(pa.float64())
        if pa.types.is_integer(self.kind):
            values = pc.drop_null(values)
        else:  # NaN and infinities would make every statistic meaningless (and are not valid JSON)
            values = pc.filter(values, pc.is_finite(values))
        if len(values) == 0:
            return
        extremes = pc.min_max(values)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        self.total += pc.sum(values.cast(pa.float64())).as_py()
        self.count += len(values)

    def read(self) -> ColumnRead:
        mean = self.total / self.count if self.count else None
        return ColumnRead(
            name=self.name,
            type=str(self.kind),
            nulls=self.nulls,
            min=self.low,
            max=self.high,
            mean=mean if mean is not None and math.isfinite(mean) else None,
        )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class MissingColumnsError(TableError):
    """The table lacks columns the caller needs; `missing` names them."""

    def __init__(self, missing: list[str], present: list[str]) -> None:
        shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
        super().__init__(f"missing columns {', '.join(missing)} (the table has {shown})")
        self.missing = missing


def sample_columns(
    path: Path, format: DatasetFormat, columns: Sequence[str], *, rows: int, n: int, seed: int
) -> dict[str, npt.NDArray[Any]]:
    """A uniform sample without replacement of min(n, rows) of the table's `rows` rows (as `profile` counted
    them), of `columns` only, in table order. One batch at a time: memory holds the sample, not the table."""
    present = _header(path, format)
    missing = [c for c in columns if c not in present]
    if missing:
        raise MissingColumnsError(missing, present)
    picks = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, rows), replace=False))
    overrides: dict[str, pa.DataType] = {}
    while True:  # as in `profile`: each round widens one CSV column's type
        try:
            return _take(path, format, list(columns), picks, overrides)
        except _WidenError as widen:
            overrides[widen.column] = widen.to


def _take(
    path: Path,
    format: DatasetFormat,
    columns: list[str],
    picks: npt.NDArray[np.int64],
    overrides: dict[str, pa.DataType],
) -> dict[str, npt.NDArray[Any]]:
    taken: dict[str, list[pa.Array]] = {c: [] for c in columns}
    offset = 0
    for batch in _parquet_batches(path, columns) if format == "parquet" else _csv_batches(path, overrides):
        low, high = np.searchsorted(picks, [offset, offset + batch.num_rows])
        if high > low:
            indices = pa.array(picks[low:high] - offset)
            for name in columns:
                taken[name].append(batch.column(name).take(indices))
        offset += batch.num_rows
    return {
        name: pa.chunked_array(parts, type=parts[0].type if parts else pa.null()).to_numpy()
        for name, parts in taken.items()
    }


def _header(path: Path, format: DatasetFormat) -> list[str]:
    try:
        if format == "parquet":
            return list(pq.read_schema(str(path)).names)
        with pa_csv.open_csv(str(path), read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_SIZE)) as reader:
            return list(reader.schema.names)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"not a readable {format} file: {_first_line(exc)}") from None


def _parquet_batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    try:
        with pq.ParquetFile(str(path)) as file:
            yield from file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"not a readable Parquet file: {_first_line(exc)}") from None


def _csv_batches(path: Path, overrides: dict[str, pa.DataType]) -> Iterator[pa.RecordBatch]:
    try:
        reader = pa_csv.open_csv(
            str(path),
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_SIZE),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types=overrides, strings_can_be_null=True),
        )
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"not a readable CSV file: {_first_line(exc)}") from None
    with reader:
        try:
            yield from reader
        except pa.ArrowInvalid as exc:
            _widen_or_raise(exc, reader.schema)
        except (pa.ArrowException, OSError) as exc:
            raise TableError(f"not a readable CSV file: {_first_line(exc)}") from None
