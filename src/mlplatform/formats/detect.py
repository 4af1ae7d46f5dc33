"""Tell an artifact's format from its bytes (magic numbers, zip members, JSON keys), never from its name."""

from __future__ import annotations

import bz2
import lzma
import pickletools
import zlib
from enum import StrEnum
from pathlib import Path

from mlplatform.formats.base import InvalidArtifactError
from mlplatform.formats.describe import reason
from mlplatform.formats.safezip import open_checked_zip

HEAD_BYTES = 64 * 1024
_UBJ_KEY_MARKERS = b"iUIlL"
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".jbl")
_LEGACY_HINTS = {
    ".h5": "legacy Keras HDF5 files are not accepted; save the model with model.save('model.keras')",
    ".hdf5": "legacy Keras HDF5 files are not accepted; save the model with model.save('model.keras')",
    ".pt": "PyTorch models are not accepted; export the model to ONNX with torch.onnx.export",
    ".pth": "PyTorch models are not accepted; export the model to ONNX with torch.onnx.export",
    ".bst": "the legacy XGBoost binary format is not accepted; save the model with save_model('model.ubj')",
    ".pb": "TensorFlow SavedModels are not accepted; save a Keras model as .keras or export it to ONNX",
}
ACCEPTED = "skops, XGBoost UBJ/JSON, LightGBM text, ONNX, Keras .keras or a zipped MLflow model"


class Kind(StrEnum):
    SKOPS = "skops"
    KERAS = "keras"
    MLFLOW = "mlflow"
    XGBOOST_UBJ = "xgboost-ubj"
    XGBOOST_JSON = "xgboost-json"
    LIGHTGBM_TEXT = "lightgbm-text"
    ONNX = "onnx"
    PICKLE = "pickle"


def detect_kind(path: Path, *, filename: str = "") -> Kind:
    """The artifact's kind; `filename` only breaks ties and improves the error message."""
    try:
        with path.open("rb") as file:
            head = file.read(HEAD_BYTES)
    except OSError as exc:
        raise InvalidArtifactError(
            f"The uploaded file cannot be read ({reason(exc)}); upload it again."
        ) from exc
    if not head:
        raise InvalidArtifactError(
            f"The uploaded file is empty; upload a model in one of these formats: {ACCEPTED}."
        )
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head.startswith(b"PK\x05\x06"):
        raise InvalidArtifactError(
            "The uploaded zip archive is empty; zip the model's files and upload again."
        )
    stripped = head.lstrip()
    if stripped.startswith(b"{"):
        if len(stripped) > 1 and stripped[1] in _UBJ_KEY_MARKERS and b"learner" in stripped[:64]:
            return Kind.XGBOOST_UBJ
        if b'"learner"' in head:
            return Kind.XGBOOST_JSON
    if head.startswith((b"tree\n", b"tree\r\n")) and b"version=v" in head[:64]:
        return Kind.LIGHTGBM_TEXT
    if is_pickle(head, filename=filename):
        return Kind.PICKLE
    if head[0] == 0x08 and (b"\x3a" in head or b"\x42" in head):
        # Protobuf field 1 (ir_version) first, as every ONNX exporter writes it; the ONNX reader validates.
        return Kind.ONNX
    raise InvalidArtifactError(_unknown_message(head, filename))


def _zip_kind(path: Path) -> Kind:
    with open_checked_zip(path) as archive:
        names = archive.namelist()
    if "schema.json" in names:
        return Kind.SKOPS
    if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
        return Kind.KERAS
    if find_mlmodel(names) is not None:
        return Kind.MLFLOW
    if any(name.endswith("data.pkl") for name in names):
        raise InvalidArtifactError(
            "The archive looks like a PyTorch model, which is not accepted; export it to ONNX with "
            "torch.onnx.export."
        )
    raise InvalidArtifactError(
        "The zip archive is neither a skops file, a Keras .keras file nor an MLflow model (no MLmodel "
        f"file); upload one of: {ACCEPTED}."
    )


def find_mlmodel(names: list[str]) -> str | None:
    """The MLmodel entry: at the archive's root, or in its single top-level folder."""
    if "MLmodel" in names:
        return "MLmodel"
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        candidate = f"{tops.pop()}/MLmodel"
        if candidate in names:
            return candidate
    return None


def is_pickle(head: bytes, *, filename: str = "") -> bool:
    """Whether `head` starts a pickle or a joblib file (plain or compressed); parses opcodes, runs nothing."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    inner = _decompressed_head(head)
    if inner is not None:
        return is_pickle(inner)
    if head.startswith(b"\x04\x22\x4d\x18"):  # lz4 frame: joblib's lz4 compressor, only a name can tell
        return filename.lower().endswith(_PICKLE_SUFFIXES)
    return _looks_like_protocol_0_or_1(head)


def _decompressed_head(head: bytes) -> bytes | None:
    try:
        if head[:1] == b"\x78" and len(head) >= 2 and (head[0] * 256 + head[1]) % 31 == 0:
            return zlib.decompressobj().decompress(head, 64)
        if head.startswith(b"\x1f\x8b"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 64)
        if head.startswith(b"BZh"):
            return bz2.BZ2Decompressor().decompress(head, 64)
        if head.startswith((b"\xfd7zXZ\x00", b"\x5d\x00\x00")):
            return lzma.LZMADecompressor().decompress(head, 64)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        return None
    return None


def _looks_like_protocol_0_or_1(head: bytes) -> bool:
    count = 0
    try:
        for opcode, _, _ in pickletools.genops(head):
            count += 1
            if opcode.name == "STOP":
                return count >= 3
    except (ValueError, UnicodeDecodeError):
        # A protocol-0 pickle cut by HEAD_BYTES ends in an error too; a long run of opcodes is still a pickle.
        return count >= 64 and len(head) == HEAD_BYTES
    return False


def _unknown_message(head: bytes, filename: str) -> str:
    if head.startswith(b"binf"):
        return (
            "The file is in the legacy XGBoost binary format, which is not accepted; re-save the model "
            "with save_model('model.ubj')."
        )
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "The file is a legacy Keras HDF5 model, which is not accepted; save it as .keras instead."
    if head.lstrip().startswith(b"{"):
        return f"The JSON file is not an XGBoost model (no 'learner' key); upload one of: {ACCEPTED}."
    suffix = Path(filename).suffix.lower()
    if suffix in _LEGACY_HINTS:
        return f"The file is not a model in an accepted format: {_LEGACY_HINTS[suffix]}."
    return f"The file is not a model in any accepted format; upload one of: {ACCEPTED}."
