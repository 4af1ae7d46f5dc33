"""`/ui/upload/model` and `/ui/upload/dataset` (editors): upload a model version or a dataset from the
browser, through the same services as `POST /api/ml/models/{name}/versions` and `POST /api/ml/datasets`. A
refused upload shows the form again, filled in (files must be chosen again), with the service's message
naming the field; it leaves nothing behind, as the API's does. Bodies are limited by
`security.limits.max-upload-size`."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import ValidationError
from starlette.responses import Response

from mlplatform.auth.schemas import Permission
from mlplatform.datasets.schemas import DatasetMetadata
from mlplatform.errors import DomainError, InvalidInput
from mlplatform.registry.schemas import VersionMetadata
from mlplatform.registry.service import Upload
from mlplatform.ui.console import PageRoute, Visit, VisitDep, redirect, status_of

router = APIRouter(prefix="/ui/upload", route_class=PageRoute, include_in_schema=False)
MAX_TAG_LINES = 100
MODEL_FIELDS = ("name", "description", "features", "parent", "tags")
DATASET_FIELDS = ("name", "description", "tags")


def parse_tags(text: str) -> dict[str, str]:
    """`key=value` lines (blank lines skipped) as the tags object the API takes."""
    found: dict[str, str] = {}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_TAG_LINES:
        raise InvalidInput(f"tags: at most {MAX_TAG_LINES} lines", details=[{"field": "tags"}])
    for number, line in enumerate(lines, 1):
        key, equals, value = line.partition("=")
        if not equals or not key.strip():
            problem = f"line {number} ({line[:60]!r}) is not key=value"
            raise InvalidInput(f"tags: {problem}", details=[{"field": "tags", "problem": problem}])
        found[key.strip()] = value.strip()
    return found


def chosen(file: UploadFile | None) -> UploadFile | None:
    """A file input left empty still sends a part: no file name and no bytes."""
    if file is None or not file.filename:
        return None
    return file


def _problem(exc: ValidationError, prefix: str) -> InvalidInput:
    details = [{"field": ".".join([prefix, *map(str, e["loc"])]), "problem": e["msg"]} for e in exc.errors()]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
    return InvalidInput(summary, details=details)


def _form_page(
    visit: Visit, template: str, form: dict[str, str], error: str | None = None, status_code: int = 200
) -> Response:
    visit.require(Permission.WRITE)
    return visit.render(template, status_code, form=form, error=error)


# --- a model version ------------------------------------------------------------------------------------


@router.get("/model")
async def model_form(visit: VisitDep, name: str = "") -> Response:
    return _form_page(visit, "upload_model.html", {**dict.fromkeys(MODEL_FIELDS, ""), "name": name[:256]})


@router.post("/model")
async def upload_model(
    visit: VisitDep,
    name: Annotated[str, Form(max_length=256)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
    features: Annotated[str, Form(max_length=200_000)] = "",
    parent: Annotated[str, Form(max_length=512)] = "",
    tags: Annotated[str, Form(max_length=20_000)] = "",
    file: Annotated[UploadFile | None, File()] = None,
    reference: Annotated[UploadFile | None, File()] = None,
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    form = {"name": name, "description": description, "features": features, "parent": parent, "tags": tags}
    try:
        artifact = chosen(file)
        if artifact is None:
            raise InvalidInput("file: choose the model's artifact file", details=[{"field": "file"}])
        if not name.strip():
            raise InvalidInput("name: enter the model's name", details=[{"field": "name"}])
        metadata = _model_metadata(description, features, parent, tags)
        sample = chosen(reference)
        upload = Upload(
            source=artifact.file,
            filename=artifact.filename or "model",
            metadata=metadata,
            reference=sample.file if sample is not None else None,
        )
        created = await visit.platform.registry.register(name.strip(), upload, actor=visit.actor)
    except DomainError as exc:  # refused: the form again, with the reason; nothing was stored
        return _form_page(visit, "upload_model.html", form, exc.message, status_of(exc))
    return redirect(f"/ui/models/{quote(created.name, safe='')}/versions/{created.version}")


def _model_metadata(description: str, features: str, parent: str, tags: str) -> VersionMetadata:
    raw: dict[str, Any] = {"description": description, "tags": parse_tags(tags)}
    names = [n.strip() for n in features.replace("\n", ",").split(",") if n.strip()]
    if names:
        raw["feature_names"] = names
    if parent.strip():
        raw["parent"] = parent.strip()
    try:
        return VersionMetadata.model_validate(raw)
    except ValidationError as exc:
        raise _problem(exc, "metadata") from None


# --- a dataset ------------------------------------------------------------------------------------------


@router.get("/dataset")
async def dataset_form(visit: VisitDep) -> Response:
    return _form_page(visit, "upload_dataset.html", dict.fromkeys(DATASET_FIELDS, ""))


@router.post("/dataset")
async def upload_dataset(
    visit: VisitDep,
    name: Annotated[str, Form(max_length=256)] = "",
    description: Annotated[str, Form(max_length=10_000)] = "",
    tags: Annotated[str, Form(max_length=20_000)] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    await visit.check_csrf()
    visit.require(Permission.WRITE)
    form = {"name": name, "description": description, "tags": tags}
    try:
        data = chosen(file)
        if data is None:
            raise InvalidInput("file: choose a CSV or Parquet file", details=[{"field": "file"}])
        try:
            metadata = DatasetMetadata.model_validate({"description": description, "tags": parse_tags(tags)})
        except ValidationError as exc:
            raise _problem(exc, "metadata") from None
        created = await visit.platform.datasets.upload(
            name=name.strip(), source=data.file, metadata=metadata, actor=visit.actor
        )
    except DomainError as exc:
        return _form_page(visit, "upload_dataset.html", form, exc.message, status_of(exc))
    return redirect(f"/ui/datasets/{quote(created.id, safe='')}")
