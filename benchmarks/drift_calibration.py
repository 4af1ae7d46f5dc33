"""Drift calibration: false-alarm and detection rates of monitoring.drift by sample size and kind of shift.

    PYTHONPATH=src python benchmarks/drift_calibration.py [--seeds 200] [--large-seeds 40] [--quick]

Prints a markdown table: for each scenario and size, the share of seeds whose feature verdict is "drift"
(our tests, alpha = 0.05 per feature), and the same share for the distance thresholds other tools use
(PSI > 0.1, PSI > 0.2). Then the model-level false-alarm rate over 30 unchanged features, and the wall time
of one check of 100,000 rows x 30 features. Every seed is fixed: the same command prints the same rates.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mlplatform.monitoring.drift import ReferenceProfile, compare

Array = npt.NDArray[np.float64] | npt.NDArray[np.object_]
Draw = Callable[[np.random.Generator, int], Array]
LEVELS = np.array([f"level-{i:03d}" for i in range(201)], dtype=object)


def normal(rng: np.random.Generator, n: int, mean: float = 0.0, sd: float = 1.0) -> Array:
    return rng.normal(mean, sd, n)


def skewed(rng: np.random.Generator, n: int) -> Array:
    """Gamma(shape 4) standardised: mean 0, sd 1 like the reference normal, skewness 1."""
    return (rng.gamma(4.0, 1.0, n) - 4.0) / 2.0


def discrete(rng: np.random.Generator, n: int) -> Array:
    return rng.poisson(3.0, n).astype(np.float64)


def binary(rng: np.random.Generator, n: int, p: float = 0.3) -> Array:
    return np.where(rng.random(n) < p, "yes", "no").astype(object)


def zipf(rng: np.random.Generator, n: int, new_share: float = 0.0, exponent: float = 1.1) -> Array:
    weights = 1.0 / np.arange(1, 201) ** exponent
    values = LEVELS[rng.choice(200, n, p=weights / weights.sum())]
    values[rng.random(n) < new_share] = LEVELS[200]  # a level the reference never has
    return values


def with_missing(rng: np.random.Generator, n: int, rate: float) -> Array:
    values = normal(rng, n)
    values[rng.random(n) < rate] = np.nan
    return values


@dataclass(frozen=True)
class Scenario:
    name: str
    shift: str
    reference: Draw
    current: Draw


SCENARIOS = [
    Scenario("numeric, continuous", "none", normal, normal),
    Scenario("numeric, discrete (Poisson 3)", "none", discrete, discrete),
    Scenario("categorical, 2 levels", "none", binary, binary),
    Scenario("categorical, 200 levels (Zipf)", "none", zipf, zipf),
    Scenario(
        "numeric, 2 % missing",
        "none",
        lambda r, n: with_missing(r, n, 0.02),
        lambda r, n: with_missing(r, n, 0.02),
    ),
    Scenario("location +0.2 sd", "location", normal, lambda r, n: normal(r, n, mean=0.2)),
    Scenario("scale x1.2", "scale", normal, lambda r, n: normal(r, n, sd=1.2)),
    Scenario("shape: normal to gamma(4), same mean and sd", "shape", normal, skewed),
    Scenario("proportions 30 % to 36 %", "category proportions", binary, lambda r, n: binary(r, n, p=0.36)),
    Scenario("Zipf exponent 1.1 to 1.2", "category proportions", zipf, lambda r, n: zipf(r, n, exponent=1.2)),
    Scenario("new level, 2 % of rows", "new category", zipf, lambda r, n: zipf(r, n, new_share=0.02)),
    Scenario(
        "missing 2 % to 10 %",
        "missing rate",
        lambda r, n: with_missing(r, n, 0.02),
        lambda r, n: with_missing(r, n, 0.10),
    ),
]


def rates(scenario: Scenario, size: int, seeds: int) -> tuple[float, float, float]:
    ours = psi_01 = psi_02 = 0
    for seed in range(seeds):
        rng = np.random.default_rng([size, seed, SCENARIOS.index(scenario)])
        profile = ReferenceProfile.from_columns({"x": scenario.reference(rng, size)})
        result = compare(profile, {"x": scenario.current(rng, size)}, seed=seed).features[0]
        ours += result.drift
        psi = result.psi or 0.0
        psi_01 += psi > 0.1
        psi_02 += psi > 0.2
    return ours / seeds, psi_01 / seeds, psi_02 / seeds


def model_level(size: int, seeds: int, features: int = 30) -> tuple[float, float]:
    """Share of seeds with a model-level drift verdict, and with some raw per-feature p <= 0.05."""
    model = raw = 0
    for seed in range(seeds):
        rng = np.random.default_rng([size, seed, 999])
        draws = [normal, discrete, binary, zipf, lambda r, n: with_missing(r, n, 0.02)]
        kinds = [draws[i % len(draws)] for i in range(features)]
        reference = {f"f{i}": d(rng, size) for i, d in enumerate(kinds)}
        current = {f"f{i}": d(rng, size) for i, d in enumerate(kinds)}
        report = compare(ReferenceProfile.from_columns(reference), current, seed=seed)
        model += report.drift
        raw += any(
            p is not None and p <= 0.05 for f in report.features for p in (f.p_value, f.missing_p_value)
        )
    return model / seeds, raw / seeds


def timing(rows: int = 100_000, features: int = 30, repeats: int = 3) -> tuple[float, float]:
    rng = np.random.default_rng(7)
    draws: list[Draw] = [normal, discrete, zipf, lambda r, n: with_missing(r, n, 0.02), binary]
    kinds = [draws[i % len(draws)] for i in range(features)]
    reference = {f"f{i}": d(rng, rows) for i, d in enumerate(kinds)}
    current = {f"f{i}": d(rng, rows) for i, d in enumerate(kinds)}
    start = time.perf_counter()
    profile = ReferenceProfile.from_columns(reference)
    build = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        compare(profile, current)
        best = min(best, time.perf_counter() - start)
    return build, best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=200, help="seeds per cell at 50, 500 and 5,000 rows")
    parser.add_argument("--large-seeds", type=int, default=40, help="seeds per cell at 100,000 rows")
    parser.add_argument("--quick", action="store_true", help="20 and 5 seeds: a smoke run, not a calibration")
    args = parser.parse_args()
    seeds, large = (20, 5) if args.quick else (args.seeds, args.large_seeds)
    sizes = [50, 500, 5_000, 100_000]
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cores, "
        f"{platform.machine()}; seeds: {seeds} per cell ({large} at 100,000 rows); alpha 0.05 per feature\n"
    )
    header = " | ".join(f"n = {s:,}: ours / PSI>0.1 / PSI>0.2" for s in sizes)
    print(f"| scenario | shift | {header} |")
    print("|---|---|" + "---|" * len(sizes))
    started = time.perf_counter()
    for scenario in SCENARIOS:
        cells = []
        for size in sizes:
            ours, p1, p2 = rates(scenario, size, large if size >= 100_000 else seeds)
            cells.append(f"**{ours:.1%}** / {p1:.0%} / {p2:.0%}")
        print(f"| {scenario.name} | {scenario.shift} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n(reference and current window both n rows; {time.perf_counter() - started:.0f} s)\n")
    print("| model level, 30 unchanged features | n = 500 | n = 5,000 |")
    print("|---|---|---|")
    model_seeds = max(seeds // 2, 10)
    levels = [model_level(size, model_seeds) for size in (500, 5_000)]
    print("| model verdict drift (Holm over 60 tests) | " + " | ".join(f"{m:.1%}" for m, _ in levels) + " |")
    print("| some raw p <= 0.05 (no correction) | " + " | ".join(f"{r:.1%}" for _, r in levels) + " |")
    print(f"\n({model_seeds} seeds per column)\n")
    build, check = timing()
    print(
        f"100,000 rows x 30 features (18 numeric, 12 categorical): profile built in {build:.2f} s, "
        f"one compare {check:.2f} s wall (best of 3, one process)"
    )


if __name__ == "__main__":
    main()
