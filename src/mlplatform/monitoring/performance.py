"""Performance of labelled predictions, computed by scikit-learn's own metric functions."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_recall_fscore_support,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from mlplatform.monitoring.schemas import (
    CalibrationBin,
    ClassificationPerformance,
    ClassScores,
    RegressionPerformance,
)
from mlplatform.stores.predictions import LabelledPredictions

CALIBRATION_BINS = 10


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def classification(data: LabelledPredictions, classes: Sequence[Any] | None) -> ClassificationPerformance:
    """Label metrics on every labelled prediction (macro: over the labels present in actual or predicted
    values, a class with no predictions scoring 0); probability metrics on those that logged probabilities
    for every class of the model (`classes`, else the logged probability columns)."""
    y_true, y_pred = list(data.actual), list(data.predicted)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0.0)
    labels = np.unique(np.asarray(y_true + y_pred))
    per_class = {
        str(label): ClassScores(precision=p, recall=r, f1=f, support=int(s))
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    performance = ClassificationPerformance(
        accuracy=accuracy_score(y_true, y_pred),
        precision_macro=precision_score(y_true, y_pred, average="macro", zero_division=0.0),
        recall_macro=recall_score(y_true, y_pred, average="macro", zero_division=0.0),
        f1_macro=f1_score(y_true, y_pred, average="macro", zero_division=0.0),
        per_class=per_class,
        with_probabilities=0,
        roc_auc=None,
        log_loss=None,
        brier_score=None,
        calibration_of=None,
        calibration=None,
    )
    probabilities = _aligned(data, classes)
    if probabilities is None:
        return performance
    known, matrix, rows = probabilities
    truth = [y_true[i] for i in rows]
    performance.with_probabilities = len(rows)
    if not rows or not set(truth) <= set(known):
        return performance
    with warnings.catch_warnings():  # logged float32 probabilities sum to one within rounding only
        warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")
        performance.log_loss = _number(log_loss(truth, matrix, labels=known))
    if len(known) == 2:
        positive = matrix[:, 1]
        performance.brier_score = _number(brier_score_loss(truth, positive, pos_label=known[1]))
        hits = np.asarray([label == known[1] for label in truth], dtype=float)
        performance.calibration_of = f"probability of {known[1]}"
        performance.calibration = _bins(hits, positive)
    else:
        performance.brier_score = _number(brier_score_loss(truth, matrix, labels=known))
        predicted = [y_pred[i] for i in rows]
        hits = np.asarray([p == t for p, t in zip(predicted, truth, strict=True)], dtype=float)
        performance.calibration_of = "top-label confidence"
        performance.calibration = _bins(hits, matrix.max(axis=1))
    if len(set(truth)) > 1:  # AUC needs both outcomes (every class, one-vs-rest)
        try:
            score = (
                roc_auc_score(truth, matrix[:, 1])
                if len(known) == 2
                else roc_auc_score(truth, matrix, multi_class="ovr", labels=known)
            )
            performance.roc_auc = _number(score)
        except ValueError:  # a class never observed, for one-vs-rest
            performance.roc_auc = None
    return performance


def _aligned(
    data: LabelledPredictions, classes: Sequence[Any] | None
) -> tuple[list[Any], np.ndarray, list[int]] | None:
    """The classes in scikit-learn's (sorted) order, the probability columns in that order, and the rows
    that logged all of them."""
    if data.probabilities is None:
        return None
    known = sorted(classes) if classes else sorted(data.classes)
    column = {label: index for index, label in enumerate(data.classes)}
    if any(str(label) not in column for label in known):
        return None
    matrix = data.probabilities[:, [column[str(label)] for label in known]]
    rows = [int(i) for i in np.flatnonzero(np.isfinite(matrix).all(axis=1))]
    return known, matrix[rows], rows


def _bins(hits: np.ndarray, scores: np.ndarray) -> list[CalibrationBin]:
    """Reliability bins as `sklearn.calibration.calibration_curve` makes them, with each bin's count."""
    observed, predicted = calibration_curve(hits, scores, n_bins=CALIBRATION_BINS, strategy="uniform")
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=CALIBRATION_BINS)
    filled = np.flatnonzero(counts)
    return [
        CalibrationBin(
            lower=float(edges[b]),
            upper=float(edges[b + 1]),
            mean_predicted=float(p),
            observed_frequency=float(o),
            count=int(counts[b]),
        )
        for b, p, o in zip(filled, predicted, observed, strict=True)
    ]


def regression(data: LabelledPredictions) -> RegressionPerformance:
    y_true = np.asarray(data.actual, dtype=float)
    y_pred = np.asarray(data.predicted, dtype=float)
    return RegressionPerformance(
        mae=float(mean_absolute_error(y_true, y_pred)),
        rmse=float(root_mean_squared_error(y_true, y_pred)),
        r2=_number(r2_score(y_true, y_pred)) if len(y_true) > 1 else None,
    )


# --- per time bucket: the headline numbers of many small sets, vectorised --------------------------------
# scikit-learn validates its inputs on every call (milliseconds each); a timeline scores up to 200 buckets
# for one page. These give the same values as `classification` and `regression` above (the tests hold
# them to scikit-learn's own functions on the same data).


def label_scores(actual: Sequence[Any], predicted: Sequence[Any]) -> tuple[float, float]:
    """Accuracy and macro F1 as `classification` computes them: F1 averaged over the labels present in
    the actual or predicted values, 2·TP / (2·TP + FP + FN) per label."""
    truth, guess = np.asarray(actual), np.asarray(predicted)
    hits = truth == guess
    labels, codes = np.unique(np.concatenate([truth, guess]), return_inverse=True)
    true_codes, guess_codes = codes[: len(truth)], codes[len(truth) :]
    tp = np.bincount(true_codes[hits], minlength=len(labels))
    fn = np.bincount(true_codes, minlength=len(labels)) - tp
    fp = np.bincount(guess_codes, minlength=len(labels)) - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    return float(hits.mean()), float(f1.mean())


def error_scores(actual: Sequence[Any], predicted: Sequence[Any]) -> tuple[float, float]:
    """MAE and RMSE as `regression` computes them."""
    errors = np.asarray(actual, dtype=float) - np.asarray(predicted, dtype=float)
    return float(np.mean(np.abs(errors))), float(np.sqrt(np.mean(errors**2)))
