"""Dataset persistence: the interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

from mlplatform.datasets.schemas import DatasetRead, Page


class DatasetStore(ABC):
    """Dataset records; the files themselves live in the artifact store under `storage_key`.

    Contract: `create` inserts the record exactly as given (the service has chosen the id, the storage key and
    the time) in one transaction. Listings are newest first (`created_at`, then `id`, descending), and `total`
    counts every match. Unknown ids raise `NotFound`. `delete` removes the record and returns the storage key
    it owned, so the caller can remove the file.
    """

    @abstractmethod
    async def create(self, dataset: DatasetRead) -> None: ...

    @abstractmethod
    async def get(self, dataset_id: str) -> DatasetRead: ...

    @abstractmethod
    async def list_datasets(self, name: str | None, limit: int, offset: int) -> Page[DatasetRead]:
        """Every dataset, or those named exactly `name`."""

    @abstractmethod
    async def delete(self, dataset_id: str) -> str: ...

    @abstractmethod
    async def storage_keys(self) -> set[str]:
        """Every key a record owns (for the orphan sweep)."""
