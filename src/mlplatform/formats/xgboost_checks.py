"""Structural checks of an XGBoost model document: its loader and predictor trust it, and crash otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mlplatform.formats.base import InvalidArtifactError
from mlplatform.formats.describe import reason

MAX_FEATURES = 10_000_000
MAX_GROUPS = 100_000
_ROOT_PARENTS = {-1, 2147483647}
_NODE_ARRAYS = (
    *("left_children", "right_children", "parents", "split_indices", "split_conditions"),
    *("split_type", "default_left", "loss_changes", "sum_hessian"),
)


class _Bad(ValueError):
    pass


def check_model(model: Any) -> None:
    """Raise InvalidArtifactError unless every count, length and index in the document is consistent."""
    try:
        _check_learner(_dict(model, "learner"))
    except (_Bad, KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise InvalidArtifactError(
            f"The XGBoost model is malformed ({reason(exc)}); save it again with save_model and upload the "
            "new file."
        ) from exc


def _check_learner(learner: dict[str, Any]) -> None:
    params = _dict(learner, "learner_model_param")
    n_features = _count(params["num_feature"], "num_feature", 1, MAX_FEATURES)
    n_classes = _count(params.get("num_class", "0"), "num_class", 0, MAX_GROUPS)
    n_targets = _count(params.get("num_target", "1"), "num_target", 1, MAX_GROUPS)
    _text(params["base_score"], "base_score")
    for key in ("feature_names", "feature_types"):
        values = learner.get(key, [])
        if len(values) not in (0, n_features) or not all(isinstance(value, str) for value in values):
            raise _Bad(f"{key} does not list one string per feature")
    attributes = learner.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise _Bad("attributes must map names to strings")
    _text(_dict(learner, "objective")["name"], "the objective's name")
    _check_booster(_dict(learner, "gradient_booster"), n_features, max(n_classes, n_targets, 1))


def _check_booster(booster: dict[str, Any], n_features: int, n_groups: int) -> None:
    name = booster["name"]
    if name == "dart":
        gbtree = _dict(booster, "gbtree")
        _check_booster(gbtree, n_features, n_groups)
        if len(booster["weight_drop"]) != len(gbtree["model"]["trees"]):
            raise _Bad("dart has a weight per tree missing")
    elif name == "gblinear":
        if len(_dict(booster, "model")["weights"]) != (n_features + 1) * n_groups:
            raise _Bad("the linear weights do not match the number of features")
    elif name == "gbtree":
        _check_gbtree(_dict(booster, "model"), n_features, n_groups)
    else:
        raise _Bad(f"the booster {str(name)[:20]!r} is unknown")


def _check_gbtree(model: dict[str, Any], n_features: int, n_groups: int) -> None:
    params = _dict(model, "gbtree_model_param")
    n_trees = _count(params["num_trees"], "num_trees", 0, 10**8)
    _count(params.get("num_parallel_tree", "1"), "num_parallel_tree", 1, 10**6)
    trees = model["trees"]
    info = _ints(model["tree_info"], "tree_info")
    if (
        len(trees) != n_trees
        or len(info) != n_trees
        or (info.size and (info.min() < 0 or info.max() >= n_groups))
    ):
        raise _Bad("num_trees, trees and tree_info disagree")
    indptr = _ints(model.get("iteration_indptr", [0, n_trees]), "iteration_indptr")
    if not indptr.size or indptr[0] != 0 or indptr[-1] != n_trees or np.any(np.diff(indptr) < 0):
        raise _Bad("iteration_indptr does not split the trees into iterations")
    _check_categories(model.get("cats", {}), n_features)
    for index, tree in enumerate(trees):
        _check_tree(tree, index, n_features)


def _check_tree(tree: Any, index: int, n_features: int) -> None:
    if not isinstance(tree, dict) or tree.get("id") != index:
        raise _Bad(f"tree {index} is not a tree or has the wrong id")
    params = _dict(tree, "tree_param")
    n_nodes = _count(params["num_nodes"], "num_nodes", 1, 2**31 - 2)
    leaf_size = _count(params.get("size_leaf_vector", "1"), "size_leaf_vector", 0, MAX_GROUPS)
    if _count(params.get("num_feature", str(n_features)), "num_feature", 0, MAX_FEATURES) != n_features:
        raise _Bad(f"tree {index} has a different number of features than the model")
    for key in _NODE_ARRAYS:
        if len(tree[key]) != n_nodes:
            raise _Bad(f"tree {index} has {len(tree[key])} values in {key} for {n_nodes} nodes")
    if len(tree["base_weights"]) != n_nodes * max(leaf_size, 1):
        raise _Bad(f"tree {index} has base_weights of the wrong length")
    left, right = (
        _ints(tree["left_children"], "left_children"),
        _ints(tree["right_children"], "right_children"),
    )
    parents, split = _ints(tree["parents"], "parents"), _ints(tree["split_indices"], "split_indices")
    leaf = left == -1
    inner = np.flatnonzero(~leaf)
    children = np.concatenate([left[inner], right[inner]])
    if np.any(leaf != (right == -1)) or (
        children.size
        and (children.min() < 1 or children.max() >= n_nodes or np.unique(children).size != children.size)
    ):
        raise _Bad(f"tree {index} has child indices outside the tree or shared between nodes")
    if int(parents[0]) not in _ROOT_PARENTS or np.any(parents[children] != np.concatenate([inner, inner])):
        raise _Bad(f"tree {index} has parents that do not match its children")
    if inner.size and (split[inner].min() < 0 or split[inner].max() >= n_features):
        raise _Bad(f"tree {index} splits on a feature the model does not have")
    _check_tree_categories(tree, index, n_nodes, _ints(tree["split_type"], "split_type"))


def _check_tree_categories(tree: dict[str, Any], index: int, n_nodes: int, split_type: NDArray[Any]) -> None:
    nodes = _ints(tree.get("categories_nodes", []), "categories_nodes")
    starts = _ints(tree.get("categories_segments", []), "categories_segments")
    sizes = _ints(tree.get("categories_sizes", []), "categories_sizes")
    n_categories = len(_ints(tree.get("categories", []), "categories"))
    categorical = np.flatnonzero(split_type == 1)
    if not (len(starts) == len(sizes) == len(nodes)) or np.any(~np.isin(categorical, nodes)):
        raise _Bad(f"tree {index} has categorical splits without categories")
    if nodes.size and (
        nodes.min() < 0
        or nodes.max() >= n_nodes
        or starts.min() < 0
        or sizes.min() < 0
        or (starts + sizes).max() > n_categories
    ):
        raise _Bad(f"tree {index} has categorical splits outside its category list")


def _check_categories(cats: Any, n_features: int) -> None:
    """The category recoder XGBoost 3 keeps for pandas categorical features."""
    if not isinstance(cats, dict):
        raise _Bad("cats is not an object")
    encodings = cats.get("enc", [])
    segments = _ints(cats.get("feature_segments", []), "feature_segments")
    order = _ints(cats.get("sorted_idx", []), "sorted_idx")
    if not encodings and not segments.size and not order.size:
        return
    if len(encodings) != n_features or len(segments) != n_features + 1 or segments[0] != 0:
        raise _Bad("cats does not describe every feature")
    if np.any(np.diff(segments) < 0) or segments[-1] != len(order):
        raise _Bad("cats has feature segments outside its category list")
    for feature, encoding in enumerate(encodings):
        offsets = _ints(encoding["offsets"], "offsets") if isinstance(encoding, dict) else None
        if offsets is None or (offsets.size and (offsets[0] != 0 or np.any(np.diff(offsets) < 0))):
            raise _Bad(f"cats has a malformed encoding for feature {feature}")
        if offsets.size and offsets[-1] != len(encoding.get("values", [])):
            raise _Bad(f"cats has offsets past the values of feature {feature}")
        width = segments[feature + 1] - segments[feature]
        part = order[segments[feature] : segments[feature + 1]]
        if part.size and (part.min() < 0 or part.max() >= width):
            raise _Bad(f"cats sorts feature {feature} with indices outside its categories")


def _dict(parent: Any, key: str) -> dict[str, Any]:
    value = parent[key]
    if not isinstance(value, dict):
        raise _Bad(f"{key} is not an object")
    return value


def _count(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise _Bad(f"{name} is not a count")
    number = int(value)
    if not low <= number <= high:
        raise _Bad(f"{name} is {number}, outside {low}..{high}")
    return number


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{name} is not a string")
    return value


def _ints(values: Sequence[Any] | NDArray[Any], name: str) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iub"):
        raise _Bad(f"{name} is not a list of integers")
    return array.astype(np.int64)
