"""scikit-learn decision trees and forests as one ONNX tree-ensemble node, built from the trees' own arrays.

skl2onnx walks every node in Python (about 5 s for a 50-tree forest of depth 16, 530,000 nodes); this
reads each tree's `tree_` arrays with numpy and hands them to the ONNX attributes whole (about 0.1 s). It is
also exact where the converter rounds: thresholds, leaf values and the running sum stay float64
(`*_as_tensor` attributes of ai.onnx.ml opset 3), so a float32 input row (what scikit-learn's trees compare
too: they cast X to float32) takes the same branch as in scikit-learn, and the probabilities differ from
scikit-learn's only by the final rounding to float32. Rows with missing values follow each split's
`missing_go_to_left`, as scikit-learn's trees do.

Only single-output trees, random forests and extra-trees are built here; `compile.sklearn_to_onnx` sends
everything else (pipelines, boosting, linear models) to skl2onnx.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlplatform.serving.runtimes.base import TREE_AVERAGES

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3  # the first with *_as_tensor (float64) attributes
ONNX_OPSET = 17


def builds(model: Any) -> bool:
    """Whether `forest_to_onnx` takes `model`: a fitted single-output tree or forest (TREE_AVERAGES)."""
    return type(model).__name__ in TREE_AVERAGES and getattr(model, "n_outputs_", None) == 1


def forest_to_onnx(model: Any, n_features: int, input_name: str) -> onnx.ModelProto:
    """One TreeEnsembleClassifier (output `probabilities`, in `classes_` order) or TreeEnsembleRegressor
    (output `variable`, shape [N, 1]) that predicts what `model` predicts on float32 rows of `n_features`."""
    if not builds(model):
        raise ValueError(f"{type(model).__name__} is not a single-output tree or forest")
    trees = [estimator.tree_ for estimator in getattr(model, "estimators_", [model])]
    classifier = hasattr(model, "classes_")
    if classifier:
        output = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(model.classes_)])
    else:
        output = helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])
    # float32 rows (compared as scikit-learn compares them), widened to float64 for the float64 thresholds
    widen = helper.make_node("Cast", [input_name], ["rows"], to=TensorProto.DOUBLE)
    graph = helper.make_graph(
        [widen],
        type(model).__name__,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_features])],
        [output],
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
        producer_name="mlplatform",
    )
    proto.ir_version = 8  # what ONNX Runtime 1.19 and later read
    # The ensemble node is filled in place: onnx.helper checks and copies every value in Python (1.5 s here).
    node = proto.graph.node.add()
    node.domain = ML_DOMAIN
    node.input.append("rows")
    nodes = _nodes(trees)
    _tree_attributes(node, nodes)
    if classifier:
        _classifier_node(node, trees, nodes, len(model.classes_))
    else:
        _regressor_node(node, trees, nodes)
    return proto


def _nodes(trees: list[Any]) -> dict[str, Any]:
    """The nodes of every tree, concatenated: tree ids, node ids within the tree, and the split of each."""
    counts = np.asarray([tree.node_count for tree in trees])
    left = np.concatenate([tree.children_left for tree in trees])
    right = np.concatenate([tree.children_right for tree in trees])
    leaf = left == -1
    missing_left = np.concatenate([_missing_go_to_left(tree) for tree in trees])
    return {
        "tree_ids": np.repeat(np.arange(len(trees)), counts),
        "node_ids": np.concatenate([np.arange(count) for count in counts]),
        "leaf": leaf,
        "feature": np.where(leaf, 0, np.concatenate([tree.feature for tree in trees])),
        "threshold": np.where(leaf, 0.0, np.concatenate([tree.threshold for tree in trees])),
        "true": np.where(leaf, 0, left),
        "false": np.where(leaf, 0, right),
        "missing_true": np.where(leaf, 0, missing_left),
    }


def _missing_go_to_left(tree: Any) -> Any:
    found = getattr(tree, "missing_go_to_left", None)  # scikit-learn >= 1.3
    if found is None:
        return np.zeros(tree.node_count, dtype=np.int64)
    return np.asarray(found, dtype=np.int64)


def _ints(node: onnx.NodeProto, name: str, values: Any) -> None:
    attribute = node.attribute.add()
    attribute.name, attribute.type = name, onnx.AttributeProto.INTS
    attribute.ints.extend(np.asarray(values, dtype=np.int64).tolist())


def _strings(node: onnx.NodeProto, name: str, values: list[bytes]) -> None:
    attribute = node.attribute.add()
    attribute.name, attribute.type = name, onnx.AttributeProto.STRINGS
    attribute.strings.extend(values)


def _doubles(node: onnx.NodeProto, name: str, values: Any) -> None:
    attribute = node.attribute.add()
    attribute.name, attribute.type = f"{name}_as_tensor", onnx.AttributeProto.TENSOR
    attribute.t.CopyFrom(numpy_helper.from_array(np.asarray(values, dtype=np.float64), name))


def _string(node: onnx.NodeProto, name: str, value: str) -> None:
    attribute = node.attribute.add()
    attribute.name, attribute.type, attribute.s = name, onnx.AttributeProto.STRING, value.encode()


def _tree_attributes(node: onnx.NodeProto, nodes: dict[str, Any]) -> None:
    _ints(node, "nodes_treeids", nodes["tree_ids"])
    _ints(node, "nodes_nodeids", nodes["node_ids"])
    _ints(node, "nodes_featureids", nodes["feature"])
    _strings(node, "nodes_modes", np.where(nodes["leaf"], b"LEAF", b"BRANCH_LEQ").tolist())
    _ints(node, "nodes_truenodeids", nodes["true"])
    _ints(node, "nodes_falsenodeids", nodes["false"])
    _ints(node, "nodes_missing_value_tracks_true", nodes["missing_true"])
    _doubles(node, "nodes_values", nodes["threshold"])
    _string(node, "post_transform", "NONE")


def _classifier_node(node: onnx.NodeProto, trees: list[Any], nodes: dict[str, Any], classes: int) -> None:
    node.op_type = "TreeEnsembleClassifier"
    node.output.extend(["label", "probabilities"])  # the label is left unused: the runtime takes argmax
    # A forest's probabilities are the mean of its trees' (each leaf's class fractions, normalised as
    # DecisionTreeClassifier.predict_proba does): every leaf gives each class fraction / number of trees.
    values = np.concatenate([tree.value[:, 0, :] for tree in trees])
    leaves = np.flatnonzero(nodes["leaf"])
    fractions = values[leaves]
    totals = fractions.sum(axis=1, keepdims=True)
    fractions = np.divide(fractions, totals, out=np.zeros_like(fractions), where=totals > 0)
    _ints(node, "classlabels_int64s", np.arange(classes))
    _ints(node, "class_treeids", np.repeat(nodes["tree_ids"][leaves], classes))
    _ints(node, "class_nodeids", np.repeat(nodes["node_ids"][leaves], classes))
    _ints(node, "class_ids", np.tile(np.arange(classes), len(leaves)))
    _doubles(node, "class_weights", (fractions / len(trees)).reshape(-1))


def _regressor_node(node: onnx.NodeProto, trees: list[Any], nodes: dict[str, Any]) -> None:
    node.op_type = "TreeEnsembleRegressor"
    node.output.append("variable")
    values = np.concatenate([tree.value[:, 0, 0] for tree in trees])
    leaves = np.flatnonzero(nodes["leaf"])
    attribute = node.attribute.add()
    attribute.name, attribute.type, attribute.i = "n_targets", onnx.AttributeProto.INT, 1
    _ints(node, "target_treeids", nodes["tree_ids"][leaves])
    _ints(node, "target_nodeids", nodes["node_ids"][leaves])
    _ints(node, "target_ids", np.zeros(len(leaves)))
    _doubles(node, "target_weights", values[leaves])
    # the sum of the trees' values over their number, as a forest averages them
    _string(node, "aggregate_function", "AVERAGE")
