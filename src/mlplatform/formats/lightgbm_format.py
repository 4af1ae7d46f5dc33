"""LightGBM text models (Booster.save_model), checked in Python first: LightGBM aborts on malformed input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mlplatform.formats.base import ArtifactFormat, Framework, InvalidArtifactError, Task
from mlplatform.formats.describe import ModelFacts, reason

FILE_NAME = "model.txt"
_AUTO_NAME = re.compile(r"Column_\d+")
_CLASSIFIERS = {"binary", "multiclass", "multiclassova"}
_INNER_ARRAYS = (
    *("split_feature", "split_gain", "threshold", "decision_type", "left_child", "right_child"),
    *("internal_value", "internal_weight", "internal_count"),
)
_LEAF_ARRAYS = ("leaf_value", "leaf_weight", "leaf_count", "leaf_const", "num_features")
_INT_ARRAYS = {"num_leaves", "num_cat", "split_feature", "decision_type", "left_child", "right_child"}
_INT_ARRAYS |= {"is_linear", "internal_count", "leaf_count", "num_features", "leaf_features"}
_INT_ARRAYS |= {"cat_boundaries", "cat_threshold"}
_PARAMETER = re.compile(r"\[[A-Za-z_][A-Za-z0-9_]*: .*\]")
_PANDAS = "pandas_categorical:"
_CATEGORICAL = 1  # LightGBM's kCategoricalMask bit in decision_type
# Strict ASCII numbers: Python's int()/float() accept "1_0" and other forms LightGBM reads differently.
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?(inf|nan)", re.IGNORECASE)


def load_booster(path: Path) -> Any:
    """The lightgbm.Booster, built from the checked parts of the file only (LightGBM never sees the rest)."""
    return _load(path)[1]


def inspect_lightgbm(path: Path) -> ModelFacts:
    import lightgbm

    header, booster = _load(path)
    names = [str(name) for name in booster.feature_name()]
    return header_facts(header, names, version=lightgbm.__version__)


def _load(path: Path) -> tuple[dict[str, str], Any]:
    import lightgbm

    header, model_text = check_model_text(path.read_bytes())
    try:
        return header, lightgbm.Booster(model_str=model_text)
    except (lightgbm.basic.LightGBMError, ValueError) as exc:
        raise InvalidArtifactError(
            f"LightGBM cannot load the model ({reason(exc)}); save it again with "
            "booster.save_model('model.txt')."
        ) from exc


def header_facts(header: dict[str, str], names: list[str], *, version: str) -> ModelFacts:
    objective = header.get("objective", "").split(" ", 1)[0]
    task = None if not objective else Task.CLASSIFICATION if objective in _CLASSIFIERS else Task.REGRESSION
    n_classes = int(header["num_class"]) if objective != "binary" else 2
    return ModelFacts(
        framework=Framework.LIGHTGBM,
        format=ArtifactFormat.LIGHTGBM_TEXT,
        flavour=f"lightgbm.Booster[{objective or 'custom'}]",
        library_version=version,
        file_name=FILE_NAME,
        task=task,
        n_features=int(header["max_feature_idx"]) + 1,
        feature_names=None if all(_AUTO_NAME.fullmatch(name) for name in names) else names,
        n_classes=n_classes if task is Task.CLASSIFICATION else None,
        probabilities=task is Task.CLASSIFICATION,
    )


def check_model_text(data: bytes) -> tuple[dict[str, str], str]:
    """The header's key=value pairs and the model rebuilt from the checked parts: the header, trees that index
    only inside the model, well-formed parameter lines and the pandas_categorical line."""
    try:
        return _check(data)
    except (ValueError, KeyError, IndexError, RecursionError) as exc:
        raise InvalidArtifactError(
            f"The LightGBM model is damaged or malformed ({reason(exc)}); save it again with "
            "booster.save_model('model.txt') and upload the new file."
        ) from exc


def _check(data: bytes) -> tuple[dict[str, str], str]:
    if b"\x00" in data:
        raise ValueError("the file contains NUL bytes, where LightGBM would stop reading")
    header: dict[str, str] = {}
    start = 0
    while start < len(data) and not data.startswith(b"Tree=", start):
        end = _line_end(data, start)
        line = data[start:end].decode("utf-8")
        if line:
            key, _, value = line.partition("=")
            header[key] = value
        start = _skip_newline(data, end)
    for key in ("num_class", "max_feature_idx", "feature_names", "feature_infos", "tree_sizes"):
        if key not in header:
            raise ValueError(f"the header has no {key} (files from LightGBM older than 3.0 are not accepted)")
    n_features = _int(header["max_feature_idx"]) + 1
    n_classes = _int(header["num_class"])
    if (
        n_classes < 1
        or _int(header.get("num_tree_per_iteration", str(n_classes))) != n_classes
        or n_features < 1
    ):
        raise ValueError("the header's num_class, num_tree_per_iteration or max_feature_idx is inconsistent")
    if any(value != str(n_classes) for value in re.findall(r"num_class:(\S*)", header.get("objective", ""))):
        raise ValueError("the objective's num_class differs from the header's")
    if len(header["feature_names"].split(" ")) != n_features:
        raise ValueError("the number of feature names differs from max_feature_idx + 1")
    sizes = _ints(header["tree_sizes"])
    if not sizes or len(sizes) % n_classes or min(sizes) < 1:
        raise ValueError("tree_sizes does not describe whole iterations of trees")
    for index, size in enumerate(sizes):
        if start + size > len(data):
            raise ValueError(f"tree {index} runs past the end of the file (is it truncated?)")
        _check_tree(_tree_fields(data[start : start + size], index), index, n_features)
        start += size
    if not data.startswith(b"end of trees", start):
        raise ValueError("the trees are not followed by 'end of trees'")
    return header, data[:start].decode("utf-8") + "end of trees\n\n" + _checked_tail(data[start:])


def _checked_tail(tail: bytes) -> str:
    """The parameters section and pandas_categorical line (LightGBM crashes on malformed parameter lines)."""
    lines = tail.decode("utf-8").replace("\r\n", "\n").split("\n")
    parameters: list[str] = []
    if "parameters:" in lines:
        section = lines[lines.index("parameters:") + 1 :]
        if "end of parameters" not in section:
            raise ValueError("the parameters section has no end")
        parameters = [line for line in section[: section.index("end of parameters")] if line]
        if bad := [line for line in parameters if not _PARAMETER.fullmatch(line)]:
            raise ValueError(f"the parameter line {bad[0][:40]!r} is malformed")
    text = "parameters:\n" + "".join(f"{line}\n" for line in parameters) + "end of parameters\n\n"
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if last.startswith(_PANDAS):
        json.loads(last[len(_PANDAS) :])
        text += f"{last}\n"
    return text


def _tree_fields(block: bytes, index: int) -> dict[str, str]:
    """The tree's key=value lines, exactly as LightGBM's Tree parser will split them."""
    if b"\r" in block.replace(b"\r\n", b""):
        raise ValueError(f"tree {index} has a carriage return that does not end a line")
    lines = block.decode("utf-8").replace("\r\n", "\n").split("\n")
    if lines[0] != f"Tree={index}" or "" not in lines[1:]:
        raise ValueError(f"tree {index} does not start where tree_sizes says, or has no blank line after it")
    fields: dict[str, str] = {}
    for line in lines[1 : lines.index("", 1)]:
        key, equals, value = line.partition("=")
        if not equals or key in fields:
            raise ValueError(f"tree {index} has a line without '=' or a repeated key")
        fields[key] = value
    return fields


def _check_tree(fields: dict[str, str], index: int, n_features: int) -> None:
    n_leaves, n_cat = _int(fields["num_leaves"]), _int(fields["num_cat"])
    if n_leaves < 1 or n_cat < 0:
        raise ValueError(f"tree {index} has no leaves or a negative category count")
    arrays: dict[str, list[int] | list[float]] = {
        name: _ints(value) if name in _INT_ARRAYS else _floats(value) for name, value in fields.items()
    }
    expected = {name: n_leaves - 1 for name in _INNER_ARRAYS} | {name: n_leaves for name in _LEAF_ARRAYS}
    for name, count in expected.items():
        if name in arrays and len(arrays[name]) != count:
            raise ValueError(f"tree {index} has {len(arrays[name])} values in {name} instead of {count}")
    required = [
        "leaf_value",
        *(("split_feature", "threshold", "left_child", "right_child") if n_leaves > 1 else ()),
    ]
    if missing := [name for name in required if name not in arrays]:
        raise ValueError(f"tree {index} has no {', '.join(missing)}")
    children = [*arrays.get("left_child", []), *arrays.get("right_child", [])]
    if any(not -n_leaves <= child < n_leaves - 1 for child in children) or 0 in children:
        raise ValueError(f"tree {index} has a child index outside the tree")
    if len(set(children)) != len(children):
        raise ValueError(f"tree {index} shares a node between parents")
    if any(not 0 <= feature < n_features for feature in arrays.get("split_feature", [])):
        raise ValueError(f"tree {index} splits on a feature the model does not have")
    _check_categories(arrays, index, n_cat)
    if arrays.get("is_linear", [0]) != [0]:
        _check_linear(arrays, index, n_features)


def _check_categories(arrays: dict[str, list[int] | list[float]], index: int, n_cat: int) -> None:
    kinds, thresholds = arrays.get("decision_type", []), arrays.get("threshold", [])
    if any(not -128 <= kind < 128 for kind in kinds):
        raise ValueError(f"tree {index} has a decision_type outside a signed byte")
    categorical = [thresholds[node] for node, kind in enumerate(kinds) if int(kind) & _CATEGORICAL]
    if any(not (float(value).is_integer() and 0 <= value < n_cat) for value in categorical):
        raise ValueError(f"tree {index} has a categorical split outside its category list")
    if n_cat:
        bounds = arrays["cat_boundaries"]
        if (
            len(bounds) != n_cat + 1
            or bounds[0] != 0
            or any(a > b for a, b in zip(bounds, bounds[1:], strict=False))
        ):
            raise ValueError(f"tree {index} has malformed cat_boundaries")
        if len(arrays["cat_threshold"]) != bounds[-1]:
            raise ValueError(f"tree {index} has cat_threshold of the wrong length")


def _check_linear(arrays: dict[str, list[int] | list[float]], index: int, n_features: int) -> None:
    counts, features = arrays.get("num_features", []), arrays.get("leaf_features", [])
    if (
        min(counts, default=0) < 0
        or sum(counts) != len(features)
        or len(arrays.get("leaf_coeff", [])) != len(features)
    ):
        raise ValueError(f"tree {index} has linear leaves of inconsistent sizes")
    if any(not 0 <= feature < n_features for feature in features):
        raise ValueError(f"tree {index} has a linear leaf on a feature the model does not have")


def _int(token: str) -> int:
    if not _INT.fullmatch(token):
        raise ValueError(f"{token[:20]!r} is not an integer")
    return int(token)


def _ints(value: str) -> list[int]:
    return [_int(token) for token in value.split(" ")] if value else []


def _floats(value: str) -> list[float]:
    tokens = value.split(" ") if value else []
    if bad := [token for token in tokens if not _FLOAT.fullmatch(token)]:
        raise ValueError(f"{bad[0][:20]!r} is not a number")
    return [float(token) for token in tokens]


def _line_end(data: bytes, start: int) -> int:
    ends = [position for position in (data.find(b"\n", start), data.find(b"\r", start)) if position >= 0]
    return min(ends) if ends else len(data)


def _skip_newline(data: bytes, position: int) -> int:
    if data.startswith(b"\r", position):
        position += 1
    if data.startswith(b"\n", position):
        position += 1
    return position
