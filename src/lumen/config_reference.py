"""The settings reference in docs/configuration.md, generated from the settings models so that it
cannot drift from the code (tests/test_docs.py regenerates it and compares)."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lumen.access.config import AccessSettings, EntityAccess, ModelAccess
from lumen.billing.config import BillingSettings, PoolSettings
from lumen.identity.groups import ClaimRule, GroupSettings
from lumen.limits.config import LimiterSettings, LimitSettings, ScopeLimits
from lumen.ops.tracing import TracingSettings
from lumen.portal.config import FooterLink, OidcSettings, PortalSettings
from lumen.settings import (
    Capabilities,
    EndpointSettings,
    LocalSettings,
    ModelSettings,
    Price,
    RoutingSettings,
    ServerSettings,
    Settings,
    Timeouts,
)

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("(top level)", Settings),
    ("server", ServerSettings),
    ("routing", RoutingSettings),
    ("local", LocalSettings),
    ("models[]", ModelSettings),
    ("models[].price", Price),
    ("models[].capabilities", Capabilities),
    ("models[].timeouts", Timeouts),
    ("models[].endpoints[]", EndpointSettings),
    ("models[].access", ModelAccess),
    ("access", AccessSettings),
    ("groups[].access", EntityAccess),
    ("billing", BillingSettings),
    ("billing.default_pool, groups[].pool", PoolSettings),
    ("groups[]", GroupSettings),
    ("groups[].rules[]", ClaimRule),
    ("rate_limits", LimiterSettings),
    ("rate_limits.default, groups[].rate_limits", LimitSettings),
    ("... .key, .principal, .model, .models[name]", ScopeLimits),
    ("portal", PortalSettings),
    ("portal.oidc", OidcSettings),
    ("portal.footer_links[]", FooterLink),
    ("tracing", TracingSettings),
]
BEGIN = "<!-- BEGIN GENERATED: lumen.config_reference -->"
END = "<!-- END GENERATED -->"


def render() -> str:
    parts = [BEGIN]
    for path, model in SECTIONS:
        parts.append(f"\n### `{path}`\n\n| key | default | description |\n|---|---|---|")
        for name, field in model.model_fields.items():
            parts.append(f"| `{name}` | {_default(field)} | {' '.join((field.description or '').split())} |")
    parts.append("\n" + END)
    return "\n".join(parts)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "`[]`"
    value = field.default
    if isinstance(value, BaseModel):
        return "see below"
    if value is None:
        return "—"
    if value == "":
        return '`""`'
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"
