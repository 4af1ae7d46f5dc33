"""Boosters trained on pandas categories, served from raw strings: codes from the model's category list."""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
import xgboost
from numpy.testing import assert_allclose

from mlplatform.formats.base import ArtifactFormat, Feature, FeatureType, Framework, ModelDescription, Task
from mlplatform.serving.runtimes import native_runtime
from mlplatform.serving.runtimes.base import sample_input

CITIES = ["lyon", "oslo", "paris"]


def describe(framework: Framework, city: FeatureType = FeatureType.STRING) -> ModelDescription:
    return ModelDescription(
        framework=framework,
        format=ArtifactFormat.XGBOOST_UBJ if framework is Framework.XGBOOST else ArtifactFormat.LIGHTGBM_TEXT,
        flavour="test",
        task=Task.CLASSIFICATION,
        features=(Feature("x"), Feature("city", city)),
        classes=(0, 1),
    )


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    city = rng.choice(CITIES, 500)
    x = rng.normal(size=500)
    label = ((city == "oslo") | (x > 1)).astype(int)
    # Categories listed in another order than sorted: the model's own list decides the codes.
    data = pd.DataFrame({"x": x, "city": pd.Categorical(city, categories=["paris", "lyon", "oslo"])})
    return data, label


def trained(framework: Framework, data: pd.DataFrame, label: np.ndarray) -> Any:
    if framework is Framework.XGBOOST:
        model = xgboost.XGBClassifier(n_estimators=10, enable_categorical=True, n_jobs=1).fit(data, label)
        booster = xgboost.Booster()
        booster.load_model(model.get_booster().save_raw("ubj"))
        return booster
    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=1).fit(data, label)
    return lightgbm.Booster(model_str=model.booster_.model_to_string())


@pytest.mark.parametrize("framework", [Framework.XGBOOST, Framework.LIGHTGBM])
def test_strings_are_encoded_with_the_models_categories_and_unseen_or_missing_is_missing(
    framework: Framework, frame: tuple[pd.DataFrame, np.ndarray]
) -> None:
    data, label = frame
    booster = trained(framework, data, label)
    runtime = native_runtime(booster, describe(framework))
    rows = np.array([[0.0, "oslo"], [0.0, "paris"], [2.0, "lyon"], [0.0, "tokyo"], [0.0, None]], dtype=object)
    got = runtime.predict(rows).probabilities
    assert got is not None
    categories = data.city.cat.categories
    codes = [list(categories).index(c) if c in categories else np.nan for c in rows[:, 1]]
    coded = np.column_stack([rows[:, 0].astype(float), codes])
    positive = booster.inplace_predict(coded) if framework is Framework.XGBOOST else booster.predict(coded)
    assert_allclose(got[:, 1], positive, rtol=1e-6)
    assert got[0, 1] > 0.5 > got[1, 1]  # oslo up, paris down: the codes were not mixed up
    assert runtime.accepts_missing_strings()
    runtime.warm_up()
    assert sample_input(runtime.description, 2, 3)[:, 1].tolist() == ["0", "0", "0"]


@pytest.mark.parametrize("framework", [Framework.XGBOOST, Framework.LIGHTGBM])
def test_a_string_feature_the_model_holds_no_categories_for_is_refused(framework: Framework) -> None:
    rng = np.random.default_rng(1)
    data = pd.DataFrame({"x": rng.normal(size=200), "city": rng.normal(size=200)})
    label = (data.x > 0).astype(int).to_numpy()
    booster = trained(framework, data, label)
    with pytest.raises(ValueError, match="categor"):
        native_runtime(booster, describe(framework))
    numeric = native_runtime(booster, describe(framework, city=FeatureType.FLOAT))
    assert not numeric.accepts_missing_strings()  # a numbers-only model keeps refusing nulls
