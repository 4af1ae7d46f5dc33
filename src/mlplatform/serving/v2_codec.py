"""Open Inference Protocol V2 tensors: JSON `data` and the binary-tensor extension, to and from the model."""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlplatform.errors import InvalidInput
from mlplatform.formats.base import FeatureType, ModelDescription
from mlplatform.serving.features import Signature

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*DTYPES, "BYTES")
HEADER_LENGTH = "inference-header-content-length"
FEATURE_TYPES = {
    FeatureType.FLOAT: "FP64",
    FeatureType.INT: "INT64",
    FeatureType.BOOL: "BOOL",
    FeatureType.STRING: "BYTES",
}
LABEL_TYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
# numpy kinds a JSON `data` list may hold for each family of datatypes (no strings or nulls for numbers)
_JSON_KINDS = {"BOOL": "b", "UINT": "biu", "INT": "biu", "FP": "biuf"}
_DIGITS = re.compile(r"[0-9]{1,12}")


@dataclass
class Tensor:
    name: str
    shape: list[int]
    datatype: str
    data: np.ndarray


def _bad(field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _bad(f"{where}.parameters", "must be an object")
    return parameters


# --- requests -----------------------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary part of a request (the extension puts tensors after the JSON)."""
    if header_length is None:
        length = len(body)
    elif _DIGITS.fullmatch(header_length.strip()) and int(header_length) <= len(body):
        length = int(header_length)
    else:
        raise _bad("Inference-Header-Content-Length", f"must be a number of bytes ≤ the body ({len(body)})")
    try:
        header = orjson.loads(body[:length])
    except orjson.JSONDecodeError as exc:
        raise _bad("body", f"the inference header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _bad("body", "the inference header must be a JSON object")
    return header, body[length:]


def decode_inputs(header: dict[str, Any], binary: bytes) -> list[Tensor]:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("inputs", "at least one input tensor is required")
    tensors: list[Tensor] = []
    offset = 0
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise _bad(where, "must be an object with name, shape, datatype and data")
        name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
        if (
            not isinstance(name, str)
            or not isinstance(shape, list)
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise _bad(where, "needs a string name and a shape of non-negative integers")
        if any(t.name == name for t in tensors):
            raise _bad(f"{where}.name", f"{name!r} is given twice")
        if datatype not in DATATYPES:
            raise _bad(f"{where}.datatype", f"{datatype!r} is not supported: use {', '.join(DATATYPES)}")
        count = math.prod(shape)
        size = _parameters(item, where).get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                problem = f"{size!r} bytes do not fit the {len(binary) - offset} binary bytes left"
                raise _bad(f"{where}.parameters.binary_data_size", problem)
            data = _from_bytes(binary[offset : offset + size], datatype, count, where)
            offset += size
        elif "data" in item:
            data = _from_json(item["data"], datatype, count, where)
        else:
            raise _bad(where, "has neither data nor parameters.binary_data_size")
        tensors.append(Tensor(name, shape, datatype, data.reshape(shape)))
    if offset != len(binary):
        raise _bad("body", f"{len(binary) - offset} bytes after the last binary tensor")
    return tensors


def _from_bytes(raw: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise _bad(where, "truncated BYTES element: a 4-byte length prefix is cut off")
            (length,) = struct.unpack_from("<I", raw, pos)
            if pos + 4 + length > len(raw):
                raise _bad(where, f"truncated BYTES element: {length} bytes announced, fewer sent")
            items.append(raw[pos + 4 : pos + 4 + length].decode("utf-8", "replace"))
            pos += 4 + length
        data = np.asarray(items, dtype=object)
    else:
        dtype = DTYPES[datatype]
        if len(raw) != count * dtype.itemsize:
            raise _bad(
                where, f"binary data is {len(raw)} bytes; shape and {datatype} need {count * dtype.itemsize}"
            )
        data = np.frombuffer(raw, dtype=dtype)
    if data.size != count:
        raise _bad(where, f"has {data.size} elements, its shape says {count}")
    return data


def _from_json(values: Any, datatype: str, count: int, where: str) -> np.ndarray:
    try:
        if datatype == "BYTES":
            data = np.asarray(values, dtype=object).reshape(-1)
        else:
            plain = np.asarray(values)
            family = datatype.rstrip("0123456789")
            if plain.size and plain.dtype.kind not in _JSON_KINDS[family]:
                raise ValueError(datatype)
            data = plain.astype(DTYPES[datatype]).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise _bad(f"{where}.data", f"is not a flat or nested list of {datatype} values") from None
    if data.size != count:
        raise _bad(f"{where}.data", f"has {data.size} elements, its shape says {count}")
    return data


def to_matrix(tensors: list[Tensor], signature: Signature) -> np.ndarray:
    """One [n, d] (or [d]) tensor in signature order, or one tensor per feature named after it."""
    if len(tensors) == 1 and tensors[0].name not in signature.index:
        tensor = tensors[0]
        matrix = tensor.data.reshape(1, -1) if tensor.data.ndim == 1 else tensor.data
        if matrix.ndim != 2 or matrix.shape[1] != signature.width or not len(matrix):
            problem = f"shape {tensor.shape}: expected [n, {signature.width}] (n ≥ 1) in signature order"
            raise _bad("inputs[0].shape", problem)
        if signature.numeric:
            _need_numbers(tensor.datatype, "inputs[0]")
            return matrix.astype(np.float64)
        columns = [matrix[:, i] for i in range(signature.width)]
        return _mixed(columns, signature, ["inputs[0]"] * signature.width)
    by_name = {t.name: (f"inputs[{i}]", t) for i, t in enumerate(tensors)}
    missing = [n for n in signature.names if n not in by_name]
    extra = sorted(set(by_name) - set(signature.names))
    if missing or extra:
        details = [{"field": f"inputs.{n}", "problem": "missing"} for n in missing]
        details += [{"field": f"inputs.{n}", "problem": "not a feature of the model"} for n in extra]
        raise InvalidInput("inputs: send one [n, d] tensor, or one tensor per feature", details=details)
    columns = [by_name[n][1].data.reshape(-1) for n in signature.names]
    sources = [by_name[n][0] for n in signature.names]
    if len({len(c) for c in columns}) != 1 or not len(columns[0]):
        raise _bad("inputs", "every feature tensor needs the same number of elements, at least one")
    if not signature.numeric:
        return _mixed(columns, signature, sources)
    for name, where in zip(signature.names, sources, strict=True):
        _need_numbers(by_name[name][1].datatype, where)
    return np.column_stack(columns).astype(np.float64)


def _need_numbers(datatype: str, where: str) -> None:
    if datatype == "BYTES":
        raise _bad(f"{where}.datatype", "BYTES: this model takes numbers (FP32, FP64, INT*, UINT* or BOOL)")


def _mixed(columns: list[np.ndarray], signature: Signature, sources: list[str]) -> np.ndarray:
    """Strings stay strings and every other feature becomes a float, as on the REST predict path."""
    matrix = np.empty((len(columns[0]), signature.width), dtype=object)
    for i, (feature, column, where) in enumerate(zip(signature.features, columns, sources, strict=True)):
        if feature.type is FeatureType.STRING:
            if column.dtype != object:
                raise _bad(f"{where}.datatype", f"feature {feature.name!r} takes strings: send BYTES")
            matrix[:, i] = [str(v) for v in column]
            continue
        try:
            matrix[:, i] = [float(v) for v in column]
        except (TypeError, ValueError):
            raise _bad(where, f"feature {feature.name!r} takes numbers") from None
    return matrix


# --- responses ----------------------------------------------------------------------------------------


def declared_outputs(description: ModelDescription) -> dict[str, tuple[str, list[int]]]:
    """Output name → (datatype, shape) as the model's stored description promises them."""
    prediction = description.outputs.get("prediction") or {}
    classes = description.classes
    kind = prediction.get("type") or ("float" if classes is None else _label_kind(classes))
    declared = {"predict": (LABEL_TYPES.get(kind, "BYTES"), [-1, *prediction.get("shape", [])])}
    has_probabilities = "probabilities" in description.outputs or not description.outputs
    if classes is not None and has_probabilities:
        declared["predict_proba"] = ("FP64", [-1, len(classes)])
    return declared


def _label_kind(classes: tuple[Any, ...]) -> str:
    if all(isinstance(c, bool) for c in classes):
        return "bool"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "int"
    if all(isinstance(c, float) for c in classes):
        return "float"
    return "string"


def output_tensor(name: str, values: np.ndarray, datatype: str) -> Tensor:
    """`values` as `datatype`, whatever width the runtime produced (ONNX Runtime answers in float32)."""
    array = np.asarray(values)
    if datatype == "BYTES":
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
        array = np.asarray(flat, dtype=object).reshape(array.shape)
    else:
        array = array.astype(DTYPES[datatype], copy=False)
    return Tensor(name, list(array.shape), datatype, array)


def requested(header: dict[str, Any], available: list[str]) -> tuple[list[str], set[str]]:
    """The outputs asked for (all when none are named) and which of them go back as binary."""
    default = _parameters(header, "body").get("binary_data_output") is True
    asked = header.get("outputs")
    if not asked:
        return list(available), set(available) if default else set()
    if not isinstance(asked, list):
        raise _bad("outputs", "must be a list of {name, parameters}")
    wanted: list[str] = []
    binary: set[str] = set()
    for index, item in enumerate(asked):
        name = item.get("name") if isinstance(item, dict) else None
        field = f"outputs[{index}]"
        if name not in available:
            raise _bad(f"{field}.name", f"unknown output {name!r}; this model has {available}")
        parameters = _parameters(item, field)
        if "classification" in parameters:
            raise _bad(f"{field}.parameters.classification", "the classification extension is not supported")
        wanted.append(name)
        if parameters.get("binary_data", default) is True:
            binary.add(name)
    return wanted, binary


def encode_outputs(
    header: dict[str, Any], outputs: list[Tensor], binary: set[str]
) -> tuple[bytes, int | None]:
    """The response body; with any output in `binary`, the JSON header length (for the response header)."""
    described, blobs = [], []
    for tensor in outputs:
        item: dict[str, Any] = {"name": tensor.name, "shape": tensor.shape, "datatype": tensor.datatype}
        if tensor.name in binary:
            blob = _to_bytes(tensor)
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = tensor.data.reshape(-1).tolist()
        described.append(item)
    body = orjson.dumps({**header, "outputs": described})
    if not blobs:
        return body, None
    return body + b"".join(blobs), len(body)


def _to_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        parts = []
        for value in tensor.data.reshape(-1):
            encoded = str(value).encode()
            parts.append(struct.pack("<I", len(encoded)) + encoded)
        return b"".join(parts)
    return np.ascontiguousarray(tensor.data).tobytes()
