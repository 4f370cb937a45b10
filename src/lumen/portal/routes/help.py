"""Help (the API reference) and Connect (snippets and tool settings), filled in for this instance.

Both pages are Markdown sources in `lumen/portal/content/` with this instance's `/v1` URL and the
user's models filled in; the tests run every code block of the rendered pages against a live
Lumen (tests/e2e/test_help_examples.py), so what a user copies is what was run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from starlette.responses import Response

from lumen.portal.content import Document, render_page
from lumen.portal.deps import CurrentUser, PortalDep
from lumen.portal.routes.models import ModelRow, visible_models

if TYPE_CHECKING:
    from lumen.portal.app import Portal

router = APIRouter()

KEY_PLACEHOLDER = "sk_your_api_key_here"
"""What the examples show where the user's key goes (the tests put a real key there)."""
MODEL_PLACEHOLDER = "your-model-name"
# A base URL taken from the request goes into code the user copies, so only a plain scheme, host
# and port is accepted; anything else (a forged Host header) falls back to the configured URL.
_PLAIN_BASE = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$")


def api_base(request: Request, portal: Portal) -> str:
    """The URL users reach this instance at, without `/v1`: `server.public_url` when it is set,
    otherwise the address of this request (what the user's browser used)."""
    settings = portal.state.settings
    if settings.server.public_url:
        return settings.public_url
    base = str(request.base_url).rstrip("/")
    return base if _PLAIN_BASE.match(base) else settings.public_url


def example_model(models: list[ModelRow], kind: str = "chat") -> str:
    """The model the examples use: the first of `kind` the user can use right away, else the
    first they could use once acknowledged."""
    of_kind = [m for m in models if m.kind == kind]
    ready = [m for m in of_kind if not m.needs_ack]
    chosen = (ready or of_kind)[:1]
    return chosen[0].name if chosen else MODEL_PLACEHOLDER


@dataclass(frozen=True, slots=True)
class DocPage:
    doc: Document
    models: list[ModelRow]
    model: str
    """The model the examples use."""
    api_base: str


@router.get("/help")
async def help_page(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    models = await visible_models(portal, user)
    model = example_model(models)
    embeddings = example_model(models, "embeddings")
    doc = render_page(
        "api-reference.md",
        base_url=api_base(request, portal),
        instance=portal.settings.instance_name,
        model=model,
        embeddings_model=embeddings if embeddings != MODEL_PLACEHOLDER else None,
    )
    page = DocPage(doc=doc, models=models, model=model, api_base=api_base(request, portal))
    return await portal.render(request, "help.html", title="API reference", user=user, page=page)


@router.get("/connect")
async def connect(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    chat = [m for m in await visible_models(portal, user) if m.kind == "chat"]
    chosen = request.query_params.get("model", "")
    model = chosen if any(m.name == chosen for m in chat) else example_model(chat)
    base = api_base(request, portal)
    doc = render_page(
        "connect.md",
        base_url=base,
        instance=portal.settings.instance_name,
        model=model,
        chat_models=[m.name for m in chat] or [model],
    )
    page = DocPage(doc=doc, models=chat, model=model, api_base=base)
    return await portal.render(request, "connect.html", title="Connect", user=user, page=page)
