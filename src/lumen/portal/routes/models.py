"""The Models pages: every model the user can see, and one page per model with its notice.

"Can see" is exactly what `/v1/models` lists for the user's keys: the access resolver's view of
the user's principal, models they may use now or once they acknowledge the notice. A model that
policy hides or refuses is not listed; its page answers like `/v1/models/{id}` (404 or 403).
Acknowledging goes through the resolver too, which records it and tells every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from lumen.access.policy import Decision, Status
from lumen.access.resolver import AccessView
from lumen.errors import InvalidRequest, ModelNotFound
from lumen.portal.content import Document, render_markdown
from lumen.portal.deps import CurrentUser, PortalDep, PortalUser
from lumen.settings import ModelSettings
from lumen.upstream.registry import Model

if TYPE_CHECKING:
    from lumen.portal.app import Portal

router = APIRouter()

CAPABILITY_FILTERS = {
    "image": "Takes images",
    "audio": "Takes audio",
    "tools": "Tool calls",
    "reasoning": "Reasoning",
}


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model as the user sees it: its facts, its health and their access to it."""

    name: str
    description: str
    kind: str
    owned_by: str
    input_price: str
    """Coins per million input tokens, as text."""
    output_price: str
    context_window: int | None
    max_output_tokens: int | None
    modalities: tuple[str, ...]
    tools: bool
    reasoning: bool
    healthy: int
    endpoints: int
    needs_ack: bool
    """Listed, but usable only once the user acknowledges the notice."""
    notice: str | None
    notice_hash: str | None
    acknowledged_at: datetime | None

    @property
    def href(self) -> str:
        return "/models/" + quote(self.name, safe="/")

    @property
    def health(self) -> str:
        if self.healthy == self.endpoints:
            return "healthy"
        return "degraded" if self.healthy else "down"

    @property
    def capabilities(self) -> list[str]:
        """The capability filter keys this model matches."""
        found = [m for m in self.modalities if m != "text"]
        return found + [c for c, on in (("tools", self.tools), ("reasoning", self.reasoning)) if on]

    @property
    def free(self) -> bool:
        return self.input_price == "0" and self.output_price == "0"

    def matches(self, query: str, kind: str, capability: str, access: str) -> bool:
        if query and query.lower() not in f"{self.name} {self.description}".lower():
            return False
        if kind and self.kind != kind:
            return False
        if capability and capability not in self.capabilities:
            return False
        if access == "usable" and self.needs_ack:
            return False
        return not (access == "needs_ack" and not self.needs_ack)


def price_text(coins_per_million: float) -> str:
    """A price without float noise or exponents: 0.15 -> "0.15", 1e-05 -> "0.00001"."""
    text = format(Decimal(repr(coins_per_million)).normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def model_row(model: Model, decision: Decision, view: AccessView) -> ModelRow:
    settings: ModelSettings = model.settings
    caps = settings.capabilities
    return ModelRow(
        name=settings.name,
        description=settings.description,
        kind=settings.kind,
        owned_by=settings.owned_by,
        input_price=price_text(settings.price.input),
        output_price=price_text(settings.price.output),
        context_window=caps.context_window,
        max_output_tokens=caps.max_output_tokens,
        modalities=tuple(caps.modalities),
        tools=caps.tools,
        reasoning=caps.reasoning,
        healthy=sum(1 for e in model.endpoints if e.is_up()),
        endpoints=len(model.endpoints),
        needs_ack=decision.status is Status.NEEDS_ACK,
        notice=decision.notice,
        notice_hash=decision.notice_hash,
        acknowledged_at=view.acknowledged_at.get(settings.name),
    )


async def visible_models(portal: Portal, user: PortalUser) -> list[ModelRow]:
    """The models `/v1/models` lists for this user, in config order."""
    state = portal.state
    principal = user.principal
    view = await state.access.resolve(principal.id, principal.groups)
    rows = []
    for decision in view.listed(principal.models):
        model = state.registry.get(decision.model)
        if model is not None:
            rows.append(model_row(model, decision, view))
    return rows


@dataclass(frozen=True, slots=True)
class ModelsPage:
    models: list[ModelRow]
    shown: list[ModelRow]
    query: str
    kind: str
    capability: str
    access: str
    capability_filters: dict[str, str]


@dataclass(frozen=True, slots=True)
class ModelPage:
    model: ModelRow
    notice_html: Document | None
    acknowledged_now: bool
    error: str = ""


@router.get("/models")
async def models(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    params = request.query_params
    query = params.get("q", "").strip()[:200]
    kind = params.get("kind", "") if params.get("kind") in ("chat", "embeddings") else ""
    capability = params.get("capability", "") if params.get("capability") in CAPABILITY_FILTERS else ""
    access = params.get("access", "") if params.get("access") in ("usable", "needs_ack") else ""
    rows = await visible_models(portal, user)
    page = ModelsPage(
        models=rows,
        shown=[r for r in rows if r.matches(query, kind, capability, access)],
        query=query,
        kind=kind,
        capability=capability,
        access=access,
        capability_filters=CAPABILITY_FILTERS,
    )
    return await portal.render(request, "models.html", title="Models", user=user, page=page)


async def _model(portal: Portal, user: PortalUser, name: str) -> ModelRow:
    """The model as `/v1/models/{name}` resolves it for the user: 404 when unknown or hidden,
    403 when policy refuses it."""
    state = portal.state
    model = state.registry.get(name)
    if model is None:
        raise ModelNotFound(name)
    view = await state.access.resolve(user.principal.id, user.principal.groups)
    decision = view.retrieve(name, key_models=user.principal.models)
    return model_row(model, decision, view)


async def _model_page(
    request: Request, user: PortalUser, portal: Portal, row: ModelRow, *, error: str = "", status: int = 200
) -> Response:
    page = ModelPage(
        model=row,
        notice_html=render_markdown(row.notice) if row.notice else None,
        acknowledged_now="acknowledged" in request.query_params and not row.needs_ack,
        error=error,
    )
    return await portal.render(
        request, "model.html", title=row.name, user=user, page=page, status_code=status
    )


@router.post("/models/{name:path}/acknowledge")
async def acknowledge(name: str, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    form = await request.form()
    notice_hash = form.get("notice_hash")
    principal = user.principal
    await _model(portal, user, name)  # 404/403 exactly as the page itself
    try:
        await portal.state.access.acknowledge(
            principal.id,
            name,
            actor=principal.id,
            via="web",
            groups=principal.groups,
            notice_hash=notice_hash if isinstance(notice_hash, str) and notice_hash else None,
            actor_is_admin=principal.is_admin,
        )
    except InvalidRequest as exc:
        # The notice changed since the page was shown, or no longer needs acknowledging: show
        # the page as it is now, with what happened.
        row = await _model(portal, user, name)
        return await _model_page(request, user, portal, row, error=exc.message, status=409)
    return RedirectResponse(f"/models/{quote(name, safe='/')}?acknowledged", status_code=303)


@router.get("/models/{name:path}")
async def model(name: str, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    return await _model_page(request, user, portal, await _model(portal, user, name))
