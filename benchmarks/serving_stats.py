"""Serving stats at their busiest: the serving pages' server time when every model served every minute.

    python benchmarks/serving_stats.py [--models 100] [--instances 3] [--runs 20]

Builds an app with `create_app` on the embedded default (SQLite) in a temporary folder, registers `--models`
models, then saves, as `--instances` server processes would have, a row for every model and minute of the
last day (and of the last week for the first model), with the hour rows the loop writes beside them. Signs in
and times the serving pages through the ASGI interface for windows of an hour, a day and a week. The goal is a
median under 100 ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from console_app import console_app, print_table, signed_in, time_pages

from mlplatform.clock import utcnow
from mlplatform.platform import Platform
from mlplatform.serving.stats import hour_of, minute_of
from mlplatform.serving.stats_store import Counts


async def seed(platform: Platform, models: list[str], instances: int) -> int:
    """Every model's minutes of the last day (the first model's of the last week), per instance."""
    now = utcnow()
    counts = Counts(600, 1, 420.0, (5, 40, 300, 200, 50, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    rows = 0
    for instance in range(instances):
        for i, model in enumerate(models):
            minutes = 7 * 1440 if i == 0 else 1440
            by_minute = {(model, minute_of(now) - timedelta(minutes=m)): counts for m in range(minutes)}
            by_hour = {(model, hour_of(now) - timedelta(hours=h)): counts for h in range(minutes // 60 + 1)}
            await platform.serving_stats.store.save(f"bench-{instance}", by_minute, by_hour, at=now)
            rows += len(by_minute) + len(by_hour)
    return rows


async def run(models: int, instances: int, runs: int, folder: Path) -> list[tuple[str, list[float], int]]:
    names = [f"model-{i:03d}" for i in range(models)]
    async with console_app(folder) as console:
        for name in names:
            await console.register(name)
        started = time.perf_counter()
        rows = await seed(console.app.state.platform, names, instances)
        print(f"saved {rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        pages = []
        for window in ("1h", "24h", "7d"):
            pages += [
                (f"Serving ({models} rows), {window}", f"/ui/serving?window={window}"),
                (f"Serving, a model, {window}", f"/ui/serving/model-000?window={window}"),
            ]
        async with signed_in(console) as browser:
            return await time_pages(browser, pages, runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlplatform-serving-bench-") as folder:
        results = asyncio.run(run(args.models, args.instances, args.runs, Path(folder)))
    print_table(
        f"Serving pages, embedded default, {args.models} models each served every minute by "
        f"{args.instances} instances, {args.runs} runs each (server time)",
        results,
    )


if __name__ == "__main__":
    main()
