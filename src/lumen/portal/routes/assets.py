"""Static files, the branding stylesheet (the configured accent colours) and a logo from disk.

The colours come as a stylesheet rather than an inline `<style>`: the Content-Security-Policy
allows no inline styles.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from lumen.errors import NotFound
from lumen.portal.assets import IMMUTABLE, REVALIDATE, media_type
from lumen.portal.config import PortalSettings
from lumen.portal.deps import PortalDep

log = logging.getLogger(__name__)
router = APIRouter()
LOGO_PATH = "/branding/logo"
_LOGO_TYPES = {".svg", ".png", ".jpg", ".jpeg", ".webp", ".gif"}


@router.get("/static/{path:path}")
async def static(path: str, request: Request, portal: PortalDep) -> Response:
    asset = portal.assets.get(path)
    if asset is None:
        raise NotFound("There is no such file.")
    etag = f'"{asset.version}"'
    cache = IMMUTABLE if request.query_params.get("v") == asset.version else REVALIDATE
    headers = {"cache-control": cache, "etag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def branding_css(portal: PortalSettings) -> str:
    return f":root {{ --accent-light: {portal.accent_color}; --accent-dark: {portal.accent_color_dark}; }}\n"


def branding_url(portal: PortalSettings) -> str:
    version = hashlib.sha256(branding_css(portal).encode()).hexdigest()[:12]
    return f"/branding.css?v={version}"


@router.get("/branding.css")
async def branding(request: Request, portal: PortalDep) -> Response:
    css = branding_css(portal.settings)
    current = branding_url(portal.settings).rpartition("=")[2]
    cache = IMMUTABLE if request.query_params.get("v") == current else REVALIDATE
    return Response(css, media_type="text/css; charset=utf-8", headers={"cache-control": cache})


@router.get(LOGO_PATH)
async def logo(portal: PortalDep) -> Response:
    configured = portal.settings.logo
    if configured is None or configured.lower().startswith(("http://", "https://")):
        raise NotFound("No logo file is configured.")
    path = Path(configured).expanduser()
    if path.suffix.lower() not in _LOGO_TYPES:
        raise NotFound("portal.logo must be an SVG, PNG, JPEG, WebP or GIF file.")
    try:
        body = path.read_bytes()
    except OSError as exc:
        log.warning("portal.logo %s cannot be read: %s", path, exc)
        raise NotFound("The configured logo file cannot be read.") from exc
    return Response(body, media_type=media_type(path.name), headers={"cache-control": "public, max-age=300"})
