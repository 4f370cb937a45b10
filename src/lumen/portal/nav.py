"""The portal's navigation: one entry per page that exists.

The planned order (issue #5) is Chat, Models, API Keys, Usage, Projects, Admin (administrators
only), Help. A page adds its entry here when it is built; there are no placeholder entries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    href: str
    admin_only: bool = False

    def is_current(self, path: str) -> bool:
        if self.href == "/":
            return path == "/"
        return path == self.href or path.startswith(self.href.rstrip("/") + "/")


NAV: tuple[NavItem, ...] = (
    NavItem("Home", "/"),
    NavItem("Chat", "/chat"),
    NavItem("Models", "/models"),
    NavItem("API Keys", "/profile/keys"),
    NavItem("Usage", "/usage"),
    NavItem("Projects", "/projects"),
    NavItem("Admin", "/admin", admin_only=True),
    NavItem("Help", "/help"),
)
