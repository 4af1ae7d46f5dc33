"""Drift statistics: calibration under no change, power for each kind of shift, model verdict, edge cases."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from mlplatform.monitoring.drift import FeatureKind, ReferenceProfile, compare
from mlplatform.monitoring.drift_tests import holm, quadratic_form_sf

Array = npt.NDArray[np.float64] | npt.NDArray[np.object_]
Draw = Callable[[np.random.Generator, int], Array]
LEVELS = np.array([f"level-{i:03d}" for i in range(201)], dtype=object)


def normal(rng: np.random.Generator, n: int, mean: float = 0.0, sd: float = 1.0) -> Array:
    return rng.normal(mean, sd, n)


def skewed(rng: np.random.Generator, n: int) -> Array:
    return (rng.gamma(4.0, 1.0, n) - 4.0) / 2.0  # mean 0, sd 1, skewness 1


def discrete(rng: np.random.Generator, n: int) -> Array:
    return rng.poisson(1.5, n).astype(np.float64)  # heavily tied: most mass on 0..3


def binary(rng: np.random.Generator, n: int, p: float = 0.3) -> Array:
    return np.where(rng.random(n) < p, "yes", "no").astype(object)


def zipf(rng: np.random.Generator, n: int, new_share: float = 0.0) -> Array:
    weights = 1.0 / np.arange(1, 201) ** 1.1
    values = LEVELS[rng.choice(200, n, p=weights / weights.sum())]
    values[rng.random(n) < new_share] = LEVELS[200]
    return values


def numeric_missing(rng: np.random.Generator, n: int, rate: float = 0.05) -> Array:
    values = rng.normal(size=n)
    values[rng.random(n) < rate] = np.nan
    return values


def categorical_missing(rng: np.random.Generator, n: int) -> Array:
    values = binary(rng, n)
    values[rng.random(n) < 0.05] = None
    return values


NULL_FEATURES: dict[str, Draw] = {
    "continuous": normal,
    "discrete": discrete,
    "two_levels": binary,
    "zipf_200": zipf,
    "numeric_missing": numeric_missing,
    "categorical_missing": categorical_missing,
}


def binomial_bound(seeds: int, rate: float = 0.05) -> int:
    """Most false alarms in `seeds` trials that a true rate of 5 % produces with probability 99.9 %."""
    return int(stats.binom.ppf(0.999, seeds, rate))


def false_alarms(sizes: list[tuple[int, int]], seeds: int) -> dict[str, int]:
    alarms = dict.fromkeys(NULL_FEATURES, 0)
    for seed in range(seeds):
        n_ref, n_cur = sizes[seed % len(sizes)]
        rng = np.random.default_rng([n_ref, n_cur, seed])
        reference = {name: draw(rng, n_ref) for name, draw in NULL_FEATURES.items()}
        current = {name: draw(rng, n_cur) for name, draw in NULL_FEATURES.items()}
        for result in compare(ReferenceProfile.from_columns(reference), current, seed=seed).features:
            alarms[result.feature] += result.drift
    return alarms


@pytest.mark.parametrize(
    ("sizes", "seeds"),
    [
        pytest.param([(30, 50), (50, 30), (40, 40)], 240, id="small"),
        pytest.param([(1100, 1500), (2000, 1100)], 300, id="medium"),
        pytest.param([(100_000, 50_000), (50_000, 100_000)], 30, id="large"),
    ],
)
def test_false_alarm_rate_per_feature_within_binomial_bound_of_five_percent(
    sizes: list[tuple[int, int]], seeds: int
) -> None:
    alarms = false_alarms(sizes, seeds)
    assert max(alarms.values()) <= binomial_bound(seeds), alarms


def test_small_current_window_against_large_reference_keeps_its_false_alarm_rate() -> None:
    alarms = false_alarms([(20_000, 40), (5000, 200)], 80)
    assert max(alarms.values()) <= binomial_bound(80), alarms


def detection_rate(reference: Draw, current: Draw, size: int, seeds: int = 20) -> float:
    hits = 0
    for seed in range(seeds):
        rng = np.random.default_rng([size, seed, 7])
        profile = ReferenceProfile.from_columns({"x": reference(rng, size)})
        hits += compare(profile, {"x": current(rng, size)}, seed=seed).features[0].drift
    return hits / seeds


@pytest.mark.parametrize(
    ("reference", "current", "size", "power"),
    [
        pytest.param(normal, lambda r, n: normal(r, n, mean=0.2), 2000, 0.9, id="location +0.2 sd"),
        pytest.param(normal, lambda r, n: normal(r, n, sd=1.2), 2000, 0.9, id="scale x1.2"),
        pytest.param(normal, skewed, 2000, 0.9, id="shape normal to skewed, same mean and sd"),
        pytest.param(normal, lambda r, n: normal(r, n, mean=1.0), 40, 0.9, id="location +1 sd, 40 rows"),
        pytest.param(binary, lambda r, n: binary(r, n, p=0.36), 5000, 0.9, id="proportions 30 to 36 %"),
        pytest.param(zipf, lambda r, n: zipf(r, n, new_share=0.02), 5000, 0.9, id="new level, 2 % of rows"),
        pytest.param(
            lambda r, n: numeric_missing(r, n, 0.02),
            lambda r, n: numeric_missing(r, n, 0.10),
            500,
            0.9,
            id="missing 2 to 10 %",
        ),
    ],
)
def test_each_kind_of_shift_is_detected_at_the_stated_power(
    reference: Draw, current: Draw, size: int, power: float
) -> None:
    assert detection_rate(reference, current, size) >= power


def test_model_verdict_keeps_family_wise_false_alarms_at_five_percent_over_thirty_features() -> None:
    seeds, draws = 60, list(NULL_FEATURES.values())
    model_alarms = raw_alarms = 0
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 30])
        kinds = [draws[i % len(draws)] for i in range(30)]
        reference = {f"f{i}": draw(rng, 1000) for i, draw in enumerate(kinds)}
        current = {f"f{i}": draw(rng, 1200) for i, draw in enumerate(kinds)}
        report = compare(ReferenceProfile.from_columns(reference), current, seed=seed)
        model_alarms += report.drift
        raw_alarms += any(f.drift for f in report.features)
    assert model_alarms <= binomial_bound(seeds)
    assert raw_alarms >= seeds // 2  # per-feature verdicts alone flag most unchanged models


def test_model_verdict_names_the_drifted_feature_among_thirty() -> None:
    rng = np.random.default_rng(3)
    reference = {f"f{i}": normal(rng, 5000) for i in range(30)}
    current = {f"f{i}": normal(rng, 5000, mean=0.3 if i == 17 else 0.0) for i in range(30)}
    report = compare(ReferenceProfile.from_columns(reference), current)
    assert report.drift and report.drifted_features == ["f17"]
    assert report.tests == 60


def test_profile_survives_json_and_gives_the_same_report() -> None:
    rng = np.random.default_rng(5)
    columns = {"x": numeric_missing(rng, 3000), "c": zipf(rng, 3000), "b": binary(rng, 3000)}
    profile = ReferenceProfile.from_columns(columns)
    restored = ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict(), allow_nan=False)))
    assert restored == profile
    current = {"x": numeric_missing(rng, 700, 0.2), "c": zipf(rng, 700, 0.1), "b": binary(rng, 700)}
    report = compare(restored, current)
    assert report.to_dict() == compare(profile, current).to_dict()
    entry = json.loads(json.dumps(report.to_dict(), allow_nan=False))["features"][0]
    assert entry["kind"] == "numeric" and entry["drift"] is True
    assert len(entry["histogram"]["reference"]) == len(entry["histogram"]["edges"]) + 1


def test_an_empty_window_is_not_enough_data() -> None:
    profile = ReferenceProfile.from_columns({"x": np.arange(100.0), "c": ["a", "b"] * 50})
    report = compare(profile, {"x": np.array([]), "c": []})
    assert report.status == "insufficient_data" and not report.drift and report.tests == 0
    assert {f.status for f in report.features} == {"insufficient_data"}
    assert compare(profile, {}).features[0].note == "feature absent from the window"


def test_a_column_gone_all_missing_is_caught_by_the_missing_rate_test() -> None:
    rng = np.random.default_rng(9)
    profile = ReferenceProfile.from_columns({"x": numeric_missing(rng, 1000, 0.02)})
    result = compare(profile, {"x": [None] * 200}).features[0]
    assert result.p_value is None and result.current_missing_rate == 1.0
    assert result.drift and result.missing_p_value is not None and result.missing_p_value < 1e-10


def test_an_all_missing_reference_still_tests_the_missing_rate() -> None:
    profile = ReferenceProfile.from_columns({"x": [None] * 100}, kinds={"x": "numeric"})
    assert compare(profile, {"x": [np.nan] * 50}).features[0].drift is False
    assert compare(profile, {"x": np.arange(50.0)}).features[0].drift is True


def test_a_constant_numeric_column_flags_any_new_value_on_either_side() -> None:
    profile = ReferenceProfile.from_columns({"x": np.full(500, 5.0)})
    assert compare(profile, {"x": np.full(300, 5.0)}).features[0].drift is False
    assert compare(profile, {"x": np.r_[np.full(280, 5.0), np.full(20, 4.0)]}).features[0].drift is True
    assert compare(profile, {"x": np.r_[np.full(280, 5.0), np.full(20, 6.0)]}).features[0].drift is True


def test_non_finite_values_count_as_missing_and_kinds_are_inferred() -> None:
    profile = ReferenceProfile.from_columns(
        {"x": [1.0, None, np.inf, 2.0], "c": ["a", None, "b", "a"], "b": [True, False, True, True]}
    )
    assert profile.features["x"].kind is FeatureKind.NUMERIC and profile.features["x"].missing == 2
    assert profile.features["c"].kind is FeatureKind.CATEGORICAL and profile.features["c"].missing == 1
    assert profile.features["b"].kind is FeatureKind.CATEGORICAL
    with pytest.raises(ValueError, match="'x' is numeric"):
        compare(profile, {"x": ["a"] * 20})


def test_weighted_chi_square_tail_matches_known_values() -> None:
    anderson_darling = 1.0 / (np.arange(1, 300) * np.arange(2, 301))
    assert quadratic_form_sf(2.492, anderson_darling) == pytest.approx(0.05, abs=0.001)
    assert quadratic_form_sf(3.857, anderson_darling) == pytest.approx(0.01, abs=0.0005)
    assert quadratic_form_sf(3.0, np.full(4, 0.2)) == pytest.approx(stats.chi2.sf(15.0, 4), rel=1e-6)
    assert quadratic_form_sf(400.0, anderson_darling) < 1e-80


def test_holm_adjusts_in_step_down_order() -> None:
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
