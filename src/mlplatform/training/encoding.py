"""String (categorical) features, encoded so that the saved model takes the raw columns at prediction time.

scikit-learn models become a `Pipeline(ColumnTransformer(OneHotEncoder), estimator)` saved with skops;
XGBoost and LightGBM get pandas `category` columns and use their own categorical support (both keep the
category list in the saved model, and serving encodes request strings with it). A missing string is a
missing value; a category the training rows never held is treated as missing by the boosters and as an
all-zero one-hot row by the pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# One-hot columns per string feature at most; rarer categories share one "infrequent" column, so a
# high-cardinality column cannot blow up the encoded matrix.
MAX_ONE_HOT = 100


def as_frame(frame: Any, features: list[str], strings: list[str]) -> Any:
    """The feature columns as training sees them: numbers as float64 (nulls NaN), strings as objects
    (nulls NaN, so missing is one level however the source spelt it)."""
    import pandas as pd  # type: ignore[import-untyped]

    columns: dict[str, Any] = {}
    for name in features:
        column = frame[name]
        if name in strings:
            values = column.astype(object)
            columns[name] = values.where(values.notna(), np.nan)
        else:  # float64 columns (most) are used as they are: no copy of a large dataset
            columns[name] = column if column.dtype == np.float64 else column.astype(np.float64)
    return pd.DataFrame(columns, index=frame.index, copy=False)


def categorical(train: Any, others: list[Any], strings: list[str]) -> tuple[Any, list[Any]]:
    """Copies with each string column as a pandas `category` of the training rows' categories (sorted);
    a value the training rows lack becomes missing in the other frames."""
    import pandas as pd

    train = train.copy()
    others = [other.copy() for other in others]
    for name in strings:
        levels = sorted({str(v) for v in train[name].dropna()})
        dtype = pd.CategoricalDtype(levels)
        train[name] = train[name].astype(dtype)
        for other in others:
            values = other[name]
            other[name] = values.where(values.isin(levels)).astype(dtype)
    return train, others


def one_hot_encoder(features: list[str], strings: list[str]) -> Any:
    """Unfitted: one-hot for the string columns, the numbers passed through, in a dense float matrix."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    encoder = OneHotEncoder(handle_unknown="ignore", max_categories=MAX_ONE_HOT, sparse_output=False)
    return ColumnTransformer(
        [("strings", encoder, [name for name in features if name in strings])],
        remainder="passthrough",
        sparse_threshold=0.0,
        verbose_feature_names_out=False,
    )


def pipeline(encoder: Any, estimator: Any) -> Any:
    """The fitted encoder and estimator as one fitted model that takes the raw columns."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("encode", encoder), ("model", estimator)])
