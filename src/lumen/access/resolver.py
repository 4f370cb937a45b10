"""The in-memory access resolver used on every request: no database read in the steady state.

It holds the configured models, group rules and global settings (`configure`), and a copy of the
database's per-principal rules and acknowledgements (`load` at start, then one query per principal
after an `invalidate`). The decisions for all models are computed once per *profile* (rule, groups,
acknowledgements) and shared by every principal with the same profile, so thousands of users with
no rule of their own cost one computation per group combination.

Freshness: `invalidate(principal)` (or `invalidate()` for everyone) marks the copy stale; the next
`resolve` for that principal reads it again. A load that started before an invalidation never
counts as fresh afterwards (each load remembers the invalidation epoch it started in), so a change
cannot be lost to a read that raced with it. Cross-process delivery of invalidations is the
caller's job (`on_change` is called after this resolver writes an acknowledgement).

All methods must be called from the event loop thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.access import store
from lumen.access.config import AccessSettings, EntityAccess
from lumen.access.policy import Decision, ModelLike, Status, decide
from lumen.errors import (
    AcknowledgementRequired,
    InvalidRequest,
    ModelNotAllowed,
    ModelNotFound,
    PermissionDenied,
)

_MAX_VIEWS_PER_PRINCIPAL = 8

_Profile = tuple[EntityAccess | None, frozenset[str], frozenset[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class AccessView:
    """What one principal (with one set of groups) may do with every configured model."""

    principal: str
    decisions: Mapping[str, Decision]
    """Every configured model, in config order."""
    acknowledged_at: Mapping[str, datetime]
    """For models whose current notice the principal acknowledged: when."""

    def get(self, model: str) -> Decision | None:
        return self.decisions.get(model)

    def require(
        self, model: str, *, acknowledge_url: str, key_models: Collection[str] | None = None
    ) -> Decision:
        """The decision for a request, or the error to answer with: 404 `model_not_found` (unknown
        or hidden), 403 `model_not_allowed` (refused, or not in the key's model list), 403
        `acknowledgement_required` (naming `acknowledge_url`, the page where to acknowledge)."""
        decision = self.retrieve(model, key_models=key_models)
        if decision.status is Status.NEEDS_ACK:
            raise AcknowledgementRequired(model, acknowledge_url=acknowledge_url)
        return decision

    def retrieve(self, model: str, *, key_models: Collection[str] | None = None) -> Decision:
        """The decision for `GET /v1/models/{model}`: a listed model (usable, or once acknowledged),
        or the error: 404 `model_not_found` (unknown or hidden), 403 `model_not_allowed`."""
        decision = self.decisions.get(model)
        if decision is None or decision.status is Status.HIDDEN:
            raise ModelNotFound(model)
        if key_models is not None and model not in key_models:
            raise ModelNotAllowed(model, detail=f"This API key is not allowed to use the model '{model}'.")
        if decision.status is Status.REFUSED:
            raise ModelNotAllowed(model)
        return decision

    def listed(self, key_models: Collection[str] | None = None) -> list[Decision]:
        """The models `/v1/models` shows: usable now, or once acknowledged; in config order."""
        return [
            d for d in self.decisions.values() if d.listed and (key_models is None or d.model in key_models)
        ]

    def model_fields(self, model: str) -> dict[str, Any]:
        """Extra fields for the model's `/v1/models` entry (the price is the caller's to add)."""
        decision = self.decisions[model]
        acknowledgement: dict[str, Any] | None = None
        if decision.notice is not None:
            at = self.acknowledged_at.get(model)
            acknowledgement = {
                "required": True,
                "acknowledged": decision.acknowledged,
                "acknowledged_at": int(at.timestamp()) if at is not None else None,
                "notice": decision.notice,
                "notice_hash": decision.notice_hash,
            }
        access = "acknowledgement_required" if decision.status is Status.NEEDS_ACK else decision.status.value
        return {"access": access, "acknowledgement": acknowledgement}


@dataclass(slots=True)
class _Entry:
    stored: store.StoredAccess
    loaded_at: int
    """The invalidation epoch the load started in."""
    acks: dict[str, dict[str, datetime]]
    """model → notice hash → acknowledged at."""
    ack_key: frozenset[tuple[str, str]]
    views: dict[Collection[str], AccessView] = field(default_factory=dict)


def _entry(stored: store.StoredAccess, loaded_at: int) -> _Entry:
    acks: dict[str, dict[str, datetime]] = {}
    for ack in stored.acknowledgements:
        acks.setdefault(ack.model, {})[ack.notice_hash] = ack.acknowledged_at
    key = frozenset((model, digest) for model, digests in acks.items() for digest in digests)
    return _Entry(stored, loaded_at, acks, key)


class AccessResolver:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        models: Sequence[ModelLike] = (),
        groups: Mapping[str, EntityAccess] | None = None,
        settings: AccessSettings | None = None,
        on_change: Callable[[str], Awaitable[None]] | None = None,
        max_profiles: int = 10_000,
    ) -> None:
        self._engine = engine
        self._on_change = on_change
        self._max_profiles = max_profiles
        self._models: tuple[ModelLike, ...] = ()
        self._groups: dict[str, EntityAccess] = {}
        self._settings = AccessSettings()
        self._profiles: OrderedDict[_Profile, Mapping[str, Decision]] = OrderedDict()
        self._entries: dict[str, _Entry] = {}
        self._epoch = 0
        self._all_invalid_at = 0
        self._invalid_at: dict[str, int] = {}
        self._snapshot_at = -1  # no snapshot yet: every principal is read on first use
        self._loading: dict[str, tuple[int, asyncio.Future[_Entry]]] = {}
        self.loads = 0
        """Database reads made for single principals (for metrics and tests)."""
        self.configure(models=models, groups=groups or {}, settings=settings or AccessSettings())

    def configure(
        self, *, models: Sequence[ModelLike], groups: Mapping[str, EntityAccess], settings: AccessSettings
    ) -> None:
        """Installs the config's models, group rules and global settings (at start and on reload)."""
        self._models = tuple(models)
        self._groups = {name: rule for name, rule in groups.items() if not rule.is_empty()}
        self._settings = settings
        self._profiles.clear()
        for entry in self._entries.values():
            entry.views.clear()

    async def load(self) -> None:
        """Reads every stored rule and acknowledgement (at start), so that no request waits for the
        database until something changes."""
        started = self._epoch
        snapshot = await store.load_all(engine=self._engine)
        self._entries = {principal: _entry(stored, started) for principal, stored in snapshot.items()}
        self._snapshot_at = started

    def invalidate(self, principal: str | None = None) -> None:
        """Forgets the stored rules and acknowledgements of `principal` (or of everyone); they are
        read again on the next `resolve`. Call it after every write to the access tables, in every
        process."""
        self._epoch += 1
        if principal is None:
            self._all_invalid_at = self._epoch
            self._invalid_at.clear()  # the global mark covers every earlier per-principal one
        else:
            self._invalid_at[principal] = self._epoch

    async def resolve(self, principal: str, groups: Collection[str] = ()) -> AccessView:
        """The principal's decisions for every model. Cached: a dictionary lookup unless the
        principal was invalidated or the config changed since its last call."""
        entry = self._fresh_entry(principal)
        if entry is None:
            entry = await self._load(principal)
        key = groups if isinstance(groups, tuple | frozenset) else tuple(groups)
        view = entry.views.get(key)
        if view is None:
            if len(entry.views) >= _MAX_VIEWS_PER_PRINCIPAL:
                entry.views.clear()  # group sets that changed with the claims; keep memory bounded
            view = entry.views[key] = self._view(principal, entry, key)
        return view

    async def acknowledge(
        self,
        principal: str,
        model: str,
        *,
        actor: str,
        via: store.Via,
        groups: Collection[str] = (),
        notice_hash: str | None = None,
        actor_is_admin: bool = False,
    ) -> store.Acknowledgement:
        """Records that `actor` (`user:<id>`) acknowledged the model's current notice for
        `principal` (themselves, or a project they manage; an admin may acknowledge for any
        project). With `notice_hash`, refuses if the notice changed since the caller showed it.
        Idempotent; the new acknowledgement is effective in this process at once and `on_change`
        is called so the others learn of it. `groups` are the principal's groups (for a project,
        the project's, not the manager's)."""
        decision = (await self.resolve(principal, groups)).get(model)
        if decision is None or decision.status is Status.HIDDEN:
            raise ModelNotFound(model)
        if decision.status is Status.REFUSED:
            raise ModelNotAllowed(model)
        if decision.notice is None or decision.notice_hash is None:
            raise InvalidRequest(
                f"The model '{model}' does not need an acknowledgement.",
                param="model",
                code="acknowledgement_not_needed",
            )
        if notice_hash is not None and notice_hash != decision.notice_hash:
            raise InvalidRequest(
                f"The notice of the model '{model}' has changed since it was shown; read it again.",
                param="notice_hash",
                code="notice_changed",
            )
        admin_for_project = actor_is_admin and principal.startswith("project:")
        if not admin_for_project and not await store.can_acknowledge(
            engine=self._engine, principal=principal, actor=actor
        ):
            raise PermissionDenied(
                "Only the user themselves, or a manager of the project, can acknowledge a model's notice."
            )
        ack, created = await store.record_acknowledgement(
            engine=self._engine,
            principal=principal,
            model=model,
            notice=decision.notice,
            actor=actor,
            via=via,
        )
        if created:
            self.invalidate(principal)
            if self._on_change is not None:
                await self._on_change(principal)
        return ack

    # --- internals -------------------------------------------------------------------------------

    def _needed(self, principal: str) -> int:
        return max(self._all_invalid_at, self._invalid_at.get(principal, -1))

    def _fresh_entry(self, principal: str) -> _Entry | None:
        entry = self._entries.get(principal)
        loaded_at = entry.loaded_at if entry is not None else self._snapshot_at
        if loaded_at < self._needed(principal):
            return None
        if entry is None:
            # The snapshot is complete: a principal missing from it has no rule and no acks.
            entry = self._entries[principal] = _entry(store.StoredAccess(), loaded_at)
        return entry

    async def _load(self, principal: str) -> _Entry:
        needed = self._needed(principal)
        pending = self._loading.get(principal)
        # Join a load already running only if it started after the latest invalidation.
        if pending is None or pending[0] < needed:
            future = asyncio.ensure_future(self._read(principal, self._epoch))
            future.add_done_callback(_consume_exception)
            pending = self._loading[principal] = (self._epoch, future)
        # Shielded: a request that is cancelled must not cancel the load other requests wait for.
        return await asyncio.shield(pending[1])

    async def _read(self, principal: str, started: int) -> _Entry:
        try:
            self.loads += 1
            stored = await store.load_principal(engine=self._engine, principal=principal)
        finally:
            current = self._loading.get(principal)
            if current is not None and current[0] == started:
                del self._loading[principal]
        entry = _entry(stored, started)
        existing = self._entries.get(principal)
        if existing is None or existing.loaded_at <= started:
            self._entries[principal] = entry
        return entry

    def _view(self, principal: str, entry: _Entry, groups: Collection[str]) -> AccessView:
        in_groups = frozenset(g for g in groups if g in self._groups)
        profile: _Profile = (entry.stored.rule, in_groups, entry.ack_key)
        decisions = self._profiles.get(profile)
        if decisions is None:
            group_rules = {g: self._groups[g] for g in in_groups}
            decisions = {
                m.name: decide(
                    m, entry.stored.rule, group_rules, self._settings, entry.acks.get(m.name, {}).keys()
                )
                for m in self._models
            }
            self._profiles[profile] = decisions
            if len(self._profiles) > self._max_profiles:
                self._profiles.popitem(last=False)
        else:
            self._profiles.move_to_end(profile)
        acknowledged_at = {
            d.model: entry.acks[d.model][d.notice_hash]
            for d in decisions.values()
            if d.acknowledged and d.notice_hash is not None
        }
        return AccessView(principal, decisions, acknowledged_at)


def _consume_exception(future: asyncio.Future[_Entry]) -> None:
    # The awaiting requests see the exception; this only keeps asyncio from logging it again when
    # every one of them was cancelled.
    if not future.cancelled():
        future.exception()
