"""Distributed training's decisions, without a cluster: when a job is distributed, how a Parquet file becomes
partitions, and when the workers cannot hold a dataset."""

from __future__ import annotations

import pytest

from mlplatform.errors import InvalidInput
from mlplatform.training.distributed import Part, filesystem, memory_problem, plan_parts, wants_distributed


def decide(asked: bool | None, algorithm: str = "xgboost", fmt: str = "parquet", rows: int = 10) -> bool:
    return wants_distributed(asked, algorithm=algorithm, dataset_format=fmt, rows=rows, threshold=100)


def test_past_the_threshold_boosting_on_parquet_is_distributed_unless_the_job_says_otherwise() -> None:
    assert decide(None, rows=101) is True
    assert decide(None, algorithm="lightgbm", rows=101) is True
    assert decide(None, rows=100) is False
    assert decide(False, rows=10_000) is False
    assert decide(True, rows=1) is True
    # Not possible and not asked: one worker trains it.
    assert decide(None, algorithm="random_forest", rows=10_000) is False
    assert decide(None, fmt="csv", rows=10_000) is False


@pytest.mark.parametrize("extra", [{"string_features": True}, {"validation_dataset": True}])
def test_string_features_or_a_validation_dataset_keep_a_job_on_one_worker_and_refuse_asking(
    extra: dict[str, bool],
) -> None:
    def decide_with(asked: bool | None) -> bool:
        return wants_distributed(
            asked, algorithm="xgboost", dataset_format="parquet", rows=10**6, threshold=100, **extra
        )

    assert decide_with(None) is False
    with pytest.raises(InvalidInput) as raised:
        decide_with(True)
    assert raised.value.details[0]["field"] == "distributed"


def test_the_drift_reference_is_parquet_with_the_feature_names() -> None:
    import io

    import numpy as np
    import pyarrow.parquet as pq

    from mlplatform.training.distributed import _parquet

    X = np.arange(40, dtype=np.float64).reshape(20, 2)
    content = _parquet(X, ["a", "b"])
    assert content is not None
    table = pq.read_table(io.BytesIO(content))
    assert table.column_names == ["a", "b"] and table.num_rows == 20
    assert table["b"].to_pylist() == X[:, 1].tolist()
    assert _parquet(X[:9], ["a", "b"]) is None


@pytest.mark.parametrize(
    ("algorithm", "fmt", "words"),
    [("random_forest", "parquet", "xgboost and lightgbm"), ("xgboost", "csv", "upload it as Parquet")],
)
def test_asking_for_it_where_it_cannot_run_names_the_field(algorithm: str, fmt: str, words: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        decide(True, algorithm=algorithm, fmt=fmt)
    assert raised.value.details == [{"field": "distributed", "problem": raised.value.details[0]["problem"]}]
    assert words in raised.value.details[0]["problem"]


def test_one_partition_per_row_group_when_there_are_enough_of_them() -> None:
    assert plan_parts([100, 100, 50], workers=2) == [Part(0, 0, 100), Part(1, 0, 100), Part(2, 0, 50)]


def test_fewer_row_groups_than_workers_are_sliced_so_every_worker_gets_rows() -> None:
    assert plan_parts([10], workers=3) == [Part(0, 0, 4), Part(0, 4, 8), Part(0, 8, 10)]
    parts = plan_parts([7, 5], workers=4)
    assert [p.stop - p.start for p in parts] == [4, 3, 3, 2]
    assert plan_parts([], workers=2) == []


def workers(*limits: int, used: int = 0) -> dict[str, dict[str, object]]:
    info = {"metrics": {"memory": used}}
    return {f"tcp://w{i}": {"memory_limit": limit, **info} for i, limit in enumerate(limits)}


def test_a_dataset_past_what_the_workers_can_hold_is_refused_saying_so() -> None:
    rows, columns = 1_000_000, 31  # 248 MB as float64, 347 MB while the library builds its matrix
    assert memory_problem(rows, columns, workers(1_000_000_000)) is None
    problem = memory_problem(rows, columns, workers(400_000_000, used=100_000_000))
    assert problem is not None
    assert "1,000,000 rows × 31 columns" in problem and "1 Dask worker(s)" in problem
    assert "add workers or give them more memory" in problem
    # Two such workers hold it between them.
    assert memory_problem(rows, columns, workers(400_000_000, 400_000_000, used=100_000_000)) is None


def test_workers_without_a_memory_limit_are_not_checked() -> None:
    assert memory_problem(10**9, 31, workers(0)) is None
    assert memory_problem(10**9, 31, {}) is None


def test_the_storage_url_becomes_a_pyarrow_filesystem_and_path(tmp_path: object) -> None:
    import pyarrow.fs as pafs

    fs, path = filesystem({"url": "file:///data/artifacts"}, "datasets/d/1/data.parquet")
    assert isinstance(fs, pafs.LocalFileSystem) and path == "/data/artifacts/datasets/d/1/data.parquet"
    storage = {
        "url": "s3://models/team?endpoint=http://127.0.0.1:8333&region=eu-west-1",
        "access_key_id": "key",
        "secret_access_key": "secret",
    }
    fs, path = filesystem(storage, "datasets/d/1/data.parquet")
    assert isinstance(fs, pafs.S3FileSystem) and path == "models/team/datasets/d/1/data.parquet"
    assert fs.region == "eu-west-1"


def test_a_peer_lost_mid_training_is_a_lost_run_and_a_training_error_is_not() -> None:
    from mlplatform.training.recovery import PeerLost, lost_run

    assert lost_run(PeerLost("Dask worker(s) tcp://w:1 training the job went away")) == (
        "Dask worker(s) tcp://w:1 training the job went away"
    )
    assert lost_run(ValueError("bad hyperparameter")) is None
