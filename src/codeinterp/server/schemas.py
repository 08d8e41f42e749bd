"""Request and reply bodies, for validation and for the OpenAPI schema.

Requests reject unknown fields, so a typo ("timeout": 5) is a 400 that names the field rather
than an option silently ignored. Outputs and executions keep the shared vocabulary's dict shapes
(`Execution.to_dict()`, `event_to_dict()`), described here as free-form objects.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCreate(Strict):
    executor: str | None = Field(None, description="an executor name; default: the service's")
    timeout_s: float | None = Field(None, gt=0, description="default wall-clock limit per cell")


class ExecuteRequest(Strict):
    code: str
    timeout_s: float | None = Field(None, gt=0, description="this cell's wall-clock limit")


class ConversationCreate(Strict):
    title: str | None = Field(None, max_length=500)


class MessageCreate(Strict):
    text: str = Field(min_length=1)


class Info(BaseModel):
    version: str
    model: str
    executor: str
    executors: list[str]


class SessionInfo(BaseModel):
    id: str
    executor: str
    state: str = Field(description="starting, idle, busy, dead (lost; replaced on next use)")
    created_at: str
    timeout_s: float | None = None
    conversation_id: str | None = None


class Ok(BaseModel):
    ok: bool = True


class FileInfo(BaseModel):
    path: str
    size: int
    modified: str


class Uploaded(BaseModel):
    path: str
    size: int


class ConversationInfo(BaseModel):
    id: str
    title: str
    session_id: str
    model: str
    executor: str
    created_at: str
    updated_at: str
    running: bool


class ConversationDetail(ConversationInfo):
    events: list[dict[str, Any]]


ExecutionDict = dict[str, Any]
