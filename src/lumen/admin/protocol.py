"""Wire models of the admin API (request and response bodies), apart from tables and logic."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lumen.api.params import RowId


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Patch(_Body):
    """A PATCH body: at least one field must change something."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    @model_validator(mode="after")
    def _changes_something(self) -> _Patch:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            names = ", ".join(f"'{name}'" for name in type(self).model_fields)
            raise ValueError(f"Nothing to change: send at least one of {names}")
        return self


class UserCreate(_Body):
    email: str = Field(min_length=3, max_length=320)
    name: str = ""
    is_admin: bool = False


class UserUpdate(_Patch):
    disabled: bool | None = None
    is_admin: bool | None = None


class UserPublic(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool
    disabled: bool
    created_at: datetime


class ProjectCreate(_Body):
    name: str = Field(min_length=1, max_length=200)
    owner_email: str
    description: str = ""


class ProjectUpdate(_Patch):
    disabled: bool | None = None
    owner_email: str | None = None
    """Transfers the ownership (the new owner becomes a manager)."""


class ProjectPublic(BaseModel):
    id: int
    name: str
    description: str
    owner_id: int
    disabled: bool
    created_at: datetime
    managers: list[int]


class KeyCreate(_Body):
    user_id: RowId | None = None
    project_id: RowId | None = None
    name: str = ""
    expires_at: datetime | None = None
    """In UTC when no offset is given."""
    models: list[str] | None = None
    coin_cap: Decimal | None = Field(default=None, ge=0, max_digits=16, decimal_places=6)
    """Most coins this key may ever spend (on top of its owner's pool)."""
    admin: bool = False
    """An admin key, the only kind that opens this API: for an administrator, without `models`."""

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("the date is out of range") from None


class KeyPublic(BaseModel):
    id: str
    owner: str
    name: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    models: list[str] | None
    coin_cap: Decimal | None = None
    admin: bool = False


class KeyCreated(KeyPublic):
    key: str
    """The secret, shown only in this response."""


class UsagePublic(BaseModel):
    request_id: str
    created_at: datetime
    principal: str
    key_id: str | None
    model: str
    endpoint: str | None
    source: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cost_micro: int
    status: int
    finish_reason: str | None


class CoinChange(_Body):
    user_id: RowId | None = None
    project_id: RowId | None = None
    amount: Decimal | None = Field(default=None, ge=0, max_digits=16, decimal_places=6)
    """Coins (up to 6 decimals); not used by `reset`."""
    note: str | None = None


class PoolPublic(BaseModel):
    principal: str
    balance: Decimal
    reserved: Decimal
    available: Decimal


class PoolOverridesBody(_Body):
    """A user's or project's own pool settings; a field left out is inherited from the groups."""

    state: Literal["limited", "unlimited", "blocked"] | None = None
    max: Decimal | None = Field(default=None, ge=0, max_digits=16, decimal_places=6)
    refresh: Decimal | None = Field(default=None, ge=0, max_digits=16, decimal_places=6)
    """Coins per hour."""
    starting: Decimal | None = Field(default=None, ge=0, max_digits=16, decimal_places=6)


class AuditEntryPublic(BaseModel):
    """One administrative action, as the audit log recorded it."""

    id: int
    created_at: datetime
    actor: str
    actor_name: str
    action: str
    target: str
    details: dict[str, Any]
    face: str
    """Where the change came from: `api`, `portal` or `cli` ("" before this was recorded)."""
