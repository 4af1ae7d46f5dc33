"""The registry store on SQL (SQLite and PostgreSQL): one transaction per change, history for every change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from mlplatform.clock import as_utc
from mlplatform.db import Database
from mlplatform.errors import NotFound
from mlplatform.formats.base import ArtifactFormat, Feature, FeatureType, Framework, ModelDescription, Task
from mlplatform.ids import new_id
from mlplatform.registry.refs import version_id
from mlplatform.registry.schemas import (
    AliasesAt,
    ArtifactRead,
    FeatureRead,
    HistoryEntry,
    ModelRead,
    Page,
    VersionRead,
)
from mlplatform.registry.snapshot import ModelEntry, VersionEntry
from mlplatform.registry.store import ModelFilter, NewVersion, RegistryStore
from mlplatform.registry.tables import AliasRow, HistoryRow, ModelRow, VersionRow


def _history(
    name: str,
    at: datetime,
    actor: str,
    action: str,
    *,
    alias: str | None = None,
    from_version: int | None = None,
    to_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> HistoryRow:
    """One audit entry: who did what to which alias or version, when, from what to what."""
    return HistoryRow(
        model_name=name,
        at=at,
        actor=actor,
        action=action,
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        details=details or {},
    )


def _model_summary(
    model: ModelRow, versions: list[tuple[int, str, str]], aliases: dict[str, int]
) -> ModelRead:
    """A model's summary from its versions' (number, status, framework) and its aliases."""
    ready = [number for number, status, _ in versions if status == "ready"]
    return ModelRead(
        name=model.name,
        description=model.description,
        tags=model.tags or {},
        aliases=aliases,
        latest_version=max((number for number, _, _ in versions), default=None),
        default_version=aliases.get("production", max(ready, default=None)),
        versions=len(versions),
        frameworks=sorted({framework for _, _, framework in versions}),
        created_at=as_utc(model.created_at),
        updated_at=as_utc(model.updated_at),
        created_by=model.created_by,
    )


def _description(row: VersionRow) -> ModelDescription:
    return ModelDescription(
        framework=Framework(row.framework),
        format=ArtifactFormat(row.format),
        flavour=row.flavour,
        task=Task(row.task),
        features=tuple(Feature(f["name"], FeatureType(f["type"])) for f in row.features),
        classes=tuple(row.classes) if row.classes is not None else None,
        outputs=row.outputs,
        library_version=row.library_version,
        file_name=row.artifact_key.rsplit("/", 1)[-1],
    )


def _version_entry(row: VersionRow) -> VersionEntry:
    return VersionEntry(
        id=row.id,
        name=row.name,
        version=row.version,
        status=row.status,
        created_at=as_utc(row.created_at),
        description=_description(row),
        artifact_key=row.artifact_key,
        artifact_sha256=row.artifact_sha256,
        reference_key=row.reference_key,
        runtime=row.runtime or {},
        parent_id=row.parent_id,
    )


def _version_read(row: VersionRow, aliases: list[str]) -> VersionRead:
    return VersionRead(
        id=row.id,
        name=row.name,
        version=row.version,
        status=row.status,
        aliases=aliases,
        description=row.description,
        tags=row.tags or {},
        metrics=row.metrics or {},
        framework=row.framework,
        flavour=row.flavour,
        task=row.task,
        features=[FeatureRead(name=f["name"], type=FeatureType(f["type"])) for f in row.features],
        classes=row.classes,
        outputs=row.outputs or {},
        artifact=ArtifactRead(
            format=row.format,
            size=row.artifact_size,
            sha256=row.artifact_sha256,
            library_version=row.library_version,
        ),
        runtime=row.runtime or {},
        parent=row.parent_id,
        training_dataset_id=row.training_dataset_id,
        training_job_id=row.training_job_id,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
    )


class SqlRegistryStore(RegistryStore):
    def __init__(self, database: Database) -> None:
        self.database = database
        self._insert = postgresql.insert if database.backend == "postgresql" else sqlite.insert

    async def _model(self, session: AsyncSession, name: str) -> ModelRow:
        row = await session.scalar(select(ModelRow).where(ModelRow.name == name))
        if row is None:
            raise NotFound(f"no model named {name!r}", details={"field": "name"})
        return row

    async def _version(self, session: AsyncSession, name: str, version: int) -> VersionRow:
        row = await session.scalar(
            select(VersionRow).where(VersionRow.name == name, VersionRow.version == version)
        )
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}", details={"field": "version"})
        return row

    async def _aliases(self, session: AsyncSession, model_id: str) -> dict[str, int]:
        rows = await session.execute(
            select(AliasRow.alias, AliasRow.version).where(AliasRow.model_id == model_id)
        )
        return {alias: version for alias, version in rows.all()}

    async def create_version(self, new: NewVersion) -> VersionRead:
        d = new.description
        async with self.database.session() as session, session.begin():
            await session.execute(
                self._insert(ModelRow)
                .values(
                    id=new_id(),
                    name=new.name,
                    description="",
                    tags={},
                    latest_version=0,
                    created_at=new.at,
                    updated_at=new.at,
                    created_by=new.actor,
                )
                .on_conflict_do_nothing(index_elements=["name"])
            )
            # The row lock taken here serialises concurrent uploads to one name until commit.
            model_id, number = (
                await session.execute(
                    update(ModelRow)
                    .where(ModelRow.name == new.name)
                    .values(latest_version=ModelRow.latest_version + 1, updated_at=new.at)
                    .returning(ModelRow.id, ModelRow.latest_version)
                )
            ).one()
            row = VersionRow(
                id=version_id(new.name, number, new.at),
                model_id=model_id,
                name=new.name,
                version=number,
                status="ready",
                description=new.version_description,
                tags=new.tags,
                metrics=new.metrics,
                framework=d.framework.value,
                format=d.format.value,
                flavour=d.flavour,
                task=d.task.value,
                features=[{"name": f.name, "type": f.type.value} for f in d.features],
                classes=list(d.classes) if d.classes is not None else None,
                outputs=d.outputs,
                library_version=d.library_version,
                artifact_key=new.artifact_key,
                artifact_size=new.artifact_size,
                artifact_sha256=new.artifact_sha256,
                reference_key=new.reference_key,
                runtime=new.runtime,
                parent_id=new.parent_id,
                training_dataset_id=new.training_dataset_id,
                training_job_id=new.training_job_id,
                created_at=new.at,
                created_by=new.actor,
            )
            session.add(row)
            session.add(
                _history(new.name, new.at, new.actor, "registered", to_version=number, details={"id": row.id})
            )
        return _version_read(row, [])

    async def entry(self, name: str) -> ModelEntry | None:
        async with self.database.session() as session:
            model = await session.scalar(select(ModelRow).where(ModelRow.name == name))
            if model is None:
                return None
            versions = (
                await session.scalars(select(VersionRow).where(VersionRow.model_id == model.id))
            ).all()
            aliases = await self._aliases(session, model.id)
        return ModelEntry(
            name=name, versions={v.version: _version_entry(v) for v in versions}, aliases=aliases
        )

    async def entries(self) -> dict[str, ModelEntry]:
        async with self.database.session() as session:
            models = {m.id: m.name for m in (await session.scalars(select(ModelRow))).all()}
            versions = (await session.scalars(select(VersionRow))).all()
            aliases = (
                await session.execute(select(AliasRow.model_id, AliasRow.alias, AliasRow.version))
            ).all()
        found = {name: ModelEntry(name=name, versions={}, aliases={}) for name in models.values()}
        for version in versions:
            found[version.name].versions[version.version] = _version_entry(version)
        for model_id, alias, number in aliases:
            found[models[model_id]].aliases[alias] = number
        return found

    async def _model_read(self, session: AsyncSession, model: ModelRow) -> ModelRead:
        return (await self._model_reads(session, [model]))[0]

    async def _model_reads(self, session: AsyncSession, models: list[ModelRow]) -> list[ModelRead]:
        """The models' summaries in two queries, whatever their number (a page of 100 took 200 before)."""
        ids = [m.id for m in models]
        versions: dict[str, list[tuple[int, str, str]]] = {i: [] for i in ids}
        aliases: dict[str, dict[str, int]] = {i: {} for i in ids}
        if ids:
            found = await session.execute(
                select(
                    VersionRow.model_id, VersionRow.version, VersionRow.status, VersionRow.framework
                ).where(VersionRow.model_id.in_(ids))
            )
            for model_id, number, status, framework in found.all():
                versions[model_id].append((number, status, framework))
            pointed = await session.execute(
                select(AliasRow.model_id, AliasRow.alias, AliasRow.version).where(AliasRow.model_id.in_(ids))
            )
            for model_id, alias, number in pointed.all():
                aliases[model_id][alias] = number
        return [_model_summary(m, versions[m.id], aliases[m.id]) for m in models]

    async def get_model(self, name: str) -> ModelRead:
        async with self.database.session() as session:
            return await self._model_read(session, await self._model(session, name))

    async def list_models(self, where: ModelFilter, limit: int, offset: int) -> Page[ModelRead]:
        query = select(ModelRow)
        if where.prefix:
            escaped = where.prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(ModelRow.name.like(f"{escaped}%", escape="\\"))
        if where.framework:
            query = query.where(
                ModelRow.id.in_(select(VersionRow.model_id).where(VersionRow.framework == where.framework))
            )
        if where.stage == "archived":
            query = query.where(
                ModelRow.id.in_(select(VersionRow.model_id).where(VersionRow.status == "archived"))
            )
        elif where.stage:
            query = query.where(
                ModelRow.id.in_(select(AliasRow.model_id).where(AliasRow.alias == where.stage))
            )
        async with self.database.session() as session:
            models = list((await session.scalars(query.order_by(ModelRow.name))).all())
            if where.tag:
                key, value = where.tag
                models = [m for m in models if (m.tags or {}).get(key) == value]
            total = len(models)
            items = await self._model_reads(session, models[offset : offset + limit])
        return Page(items=items, total=total, limit=limit, offset=offset)

    async def get_version(self, name: str, version: int) -> VersionRead:
        async with self.database.session() as session:
            row = await self._version(session, name, version)
            aliases = await self._aliases(session, row.model_id)
        return _version_read(row, sorted(a for a, n in aliases.items() if n == version))

    async def list_versions(self, name: str, limit: int, offset: int) -> Page[VersionRead]:
        async with self.database.session() as session:
            model = await self._model(session, name)
            total = await session.scalar(select(func.count()).where(VersionRow.model_id == model.id)) or 0
            rows = (
                await session.scalars(
                    select(VersionRow)
                    .where(VersionRow.model_id == model.id)
                    .order_by(VersionRow.version.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            aliases = await self._aliases(session, model.id)
        items = [_version_read(r, sorted(a for a, n in aliases.items() if n == r.version)) for r in rows]
        return Page(items=items, total=total, limit=limit, offset=offset)

    async def update_model(self, name: str, *, description: str | None, tags: dict[str, str] | None) -> None:
        values: dict[str, Any] = {}
        if description is not None:
            values["description"] = description
        if tags is not None:
            values["tags"] = tags
        async with self.database.session() as session, session.begin():
            await self._model(session, name)
            if values:
                await session.execute(update(ModelRow).where(ModelRow.name == name).values(**values))

    async def update_version(
        self, name: str, version: int, *, description: str | None, tags: dict[str, str] | None
    ) -> None:
        async with self.database.session() as session, session.begin():
            row = await self._version(session, name, version)
            if description is not None:
                row.description = description
            if tags is not None:
                row.tags = tags

    async def set_runtime(self, version_id: str, runtime: dict[str, Any]) -> None:
        async with self.database.session() as session, session.begin():
            await session.execute(
                update(VersionRow).where(VersionRow.id == version_id).values(runtime=runtime)
            )

    async def set_alias(self, name: str, alias: str, version: int | None, actor: str, at: datetime) -> None:
        async with self.database.session() as session, session.begin():
            model = await self._model(session, name)
            if version is not None:
                await self._version(session, name, version)
            current = await session.scalar(
                select(AliasRow)
                .where(AliasRow.model_id == model.id, AliasRow.alias == alias)
                .with_for_update()
            )
            previous = current.version if current else None
            if previous == version:
                return
            if version is None:
                await session.execute(
                    delete(AliasRow).where(AliasRow.model_id == model.id, AliasRow.alias == alias)
                )
            elif current is None:
                session.add(AliasRow(model_id=model.id, alias=alias, version=version, updated_at=at))
            else:
                current.version, current.updated_at = version, at
            session.add(
                _history(
                    name,
                    at,
                    actor,
                    "alias_set" if version else "alias_removed",
                    alias=alias,
                    from_version=previous,
                    to_version=version,
                )
            )

    async def archive(self, name: str, version: int, actor: str, at: datetime) -> None:
        async with self.database.session() as session, session.begin():
            row = await self._version(session, name, version)
            if row.status == "archived":
                return
            pointing = (
                await session.scalars(
                    select(AliasRow).where(AliasRow.model_id == row.model_id, AliasRow.version == version)
                )
            ).all()
            for alias in pointing:
                await session.delete(alias)
                session.add(
                    _history(
                        name,
                        at,
                        actor,
                        "alias_removed",
                        alias=alias.alias,
                        from_version=version,
                        details={"reason": "archived"},
                    )
                )
            row.status = "archived"
            session.add(_history(name, at, actor, "archived", from_version=version))

    async def purge_version(self, name: str, version: int, actor: str, at: datetime) -> list[str]:
        async with self.database.session() as session, session.begin():
            row = await self._version(session, name, version)
            keys = [k for k in (row.artifact_key, row.reference_key) if k]
            await session.execute(
                delete(AliasRow).where(AliasRow.model_id == row.model_id, AliasRow.version == version)
            )
            await session.execute(
                update(VersionRow).where(VersionRow.parent_id == row.id).values(parent_id=None)
            )
            await session.delete(row)
            session.add(_history(name, at, actor, "purged", from_version=version, details={"id": row.id}))
        return keys

    async def purge_model(self, name: str, actor: str, at: datetime) -> list[str]:
        async with self.database.session() as session, session.begin():
            model = await self._model(session, name)
            rows = (await session.scalars(select(VersionRow).where(VersionRow.model_id == model.id))).all()
            keys = [k for row in rows for k in (row.artifact_key, row.reference_key) if k]
            ids = [row.id for row in rows]
            await session.execute(
                update(VersionRow).where(VersionRow.parent_id.in_(ids)).values(parent_id=None)
            )
            await session.execute(delete(AliasRow).where(AliasRow.model_id == model.id))
            await session.execute(delete(VersionRow).where(VersionRow.model_id == model.id))
            await session.delete(model)
            session.add(_history(name, at, actor, "purged", details={"versions": len(rows)}))
        return keys

    async def record(self, name: str, action: str, actor: str, at: datetime, details: dict[str, Any]) -> None:
        async with self.database.session() as session, session.begin():
            await self._model(session, name)
            session.add(_history(name, at, actor, action, details=details))

    async def history(self, name: str, limit: int, offset: int) -> Page[HistoryEntry]:
        where = HistoryRow.model_name == name
        async with self.database.session() as session:
            total = await session.scalar(select(func.count()).where(where)) or 0
            if total == 0:
                raise NotFound(f"no model named {name!r}", details={"field": "name"})
            rows = (
                await session.scalars(
                    select(HistoryRow)
                    .where(where)
                    .order_by(HistoryRow.at.desc(), HistoryRow.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        items = [
            HistoryEntry(
                at=as_utc(r.at),
                actor=r.actor,
                action=r.action,
                alias=r.alias,
                from_version=r.from_version,
                to_version=r.to_version,
                details=r.details or {},
            )
            for r in rows
        ]
        return Page(items=items, total=total, limit=limit, offset=offset)

    async def aliases_at(self, name: str, at: datetime) -> AliasesAt:
        async with self.database.session() as session:
            rows = (
                await session.execute(
                    select(HistoryRow.alias, HistoryRow.to_version)
                    .where(HistoryRow.model_name == name, HistoryRow.alias.is_not(None), HistoryRow.at <= at)
                    .order_by(HistoryRow.at, HistoryRow.id)
                )
            ).all()
            if (
                not rows
                and await session.scalar(select(func.count()).where(HistoryRow.model_name == name)) == 0
            ):
                raise NotFound(f"no model named {name!r}", details={"field": "name"})
        state: dict[str, int] = {}
        for alias, version in rows:
            if alias is None:
                continue
            if version is None:
                state.pop(alias, None)
            else:
                state[alias] = version
        return AliasesAt(name=name, at=at, aliases=state)

    async def storage_keys(self) -> set[str]:
        async with self.database.session() as session:
            rows = (await session.execute(select(VersionRow.artifact_key, VersionRow.reference_key))).all()
        return {key for row in rows for key in row if key}
