"""Response schemas of the routes that build their JSON by hand (actuator, Open Inference Protocol V2).

These routes return a `JsonResponse` directly; the models here are what OpenAPI documents for them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HealthStatus = Literal["UP", "DEGRADED", "DOWN"]


class ComponentRead(BaseModel):
    status: Literal["UP", "DOWN"]
    details: dict[str, Any] = Field(description="latency_ms, backend, and error when DOWN")


class HealthRead(BaseModel):
    status: HealthStatus
    components: dict[str, ComponentRead]


class ProbeRead(BaseModel):
    status: Literal["UP", "OUT_OF_SERVICE"]
    details: dict[str, str] | None = Field(None, description="why not ready, by component")


class InfoRead(BaseModel):
    model_config = ConfigDict(extra="allow")

    app: dict[str, Any]
    backends: dict[str, str]
    security: dict[str, Any]


class MetricNames(BaseModel):
    names: list[str]


class Measurement(BaseModel):
    statistic: str
    value: float


class AvailableTag(BaseModel):
    tag: str
    values: list[str]


class MetricRead(BaseModel):
    name: str
    description: str
    type: str
    measurements: list[Measurement]
    availableTags: list[AvailableTag]  # Spring's name


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any]


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="row-major; absent when sent as binary")


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(BaseModel):
    id: str | None = Field(None, max_length=128, description="logged as the prediction's request_id")
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Tensor]
