"""The web portal: server-rendered pages at `/` (Jinja2 templates, small vanilla JS per feature,
assets served by Lumen itself), logged in with server-side sessions (docs/portal.md).

`lumen.portal.app` builds it; pages reach the logged-in user through `lumen.portal.deps`.
"""
