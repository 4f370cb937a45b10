"""Model access through a live Lumen: listing, refusals, acknowledgement by API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support import ECHO, model, running_lumen

NOTICE = "Outputs may be logged for safety review."
CONFIG: dict[str, Any] = {
    "server": {"auth_cache_seconds": 0},
    "models": [
        model("open", ECHO),
        model("careful", ECHO, access={"acknowledge": True, "notice": NOTICE}),
        model("closed", ECHO, access={"access": "blocked"}),
        model("staff-only", ECHO, access={"access": "blocked"}),
    ],
    "groups": [
        {"name": "staff", "members": ["admin@localhost"], "access": {"allow": ["staff-only"]}},
        {"name": "nobody", "members": [], "access": {"block": ["open"]}},
    ],
}


def _chat(lumen: Any, name: str) -> httpx.Response:
    body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(lumen.v1 + "/chat/completions", headers=lumen.auth, json=body)


def test_listing_refusals_and_acknowledgement(tmp_path: Path) -> None:
    with running_lumen(tmp_path, CONFIG) as lumen:
        listed = httpx.get(lumen.v1 + "/models", headers=lumen.auth).json()["data"]
        names = {card["id"] for card in listed}
        assert names == {"open", "careful", "staff-only"}  # `closed` is refused: not listed
        careful = next(card for card in listed if card["id"] == "careful")
        assert careful["acknowledgement"]["notice"] == NOTICE
        assert careful["acknowledgement"]["acknowledged_at"] is None

        assert _chat(lumen, "open").status_code == 200
        assert _chat(lumen, "staff-only").status_code == 200  # the group allows it
        closed = _chat(lumen, "closed")
        assert closed.status_code == 403 and closed.json()["error"]["code"] == "model_not_allowed"
        needs = _chat(lumen, "careful")
        assert needs.status_code == 403
        assert needs.json()["error"]["code"] == "acknowledgement_required"
        assert "/models/careful" in needs.json()["error"]["message"]

        stale = httpx.post(
            lumen.v1 + "/models/careful/acknowledge", headers=lumen.auth, json={"notice_hash": "0" * 64}
        )
        assert stale.status_code == 400 and stale.json()["error"]["code"] == "notice_changed"
        done = httpx.post(
            lumen.v1 + "/models/careful/acknowledge",
            headers=lumen.auth,
            json={"notice_hash": careful["acknowledgement"]["notice_hash"]},
        )
        assert done.status_code == 200, done.text
        assert _chat(lumen, "careful").status_code == 200
        again = httpx.get(lumen.v1 + "/models/careful", headers=lumen.auth).json()
        assert again["acknowledgement"]["acknowledged_at"] is not None


def test_an_unknown_or_hidden_model_is_404(tmp_path: Path) -> None:
    config = {
        **CONFIG,
        "groups": [{"name": "g", "members": ["admin@localhost"], "access": {"block": ["open"]}}],
    }
    with running_lumen(tmp_path, config) as lumen:
        hidden = _chat(lumen, "open")
        listed = {c["id"] for c in httpx.get(lumen.v1 + "/models", headers=lumen.auth).json()["data"]}
        detail = httpx.get(lumen.v1 + "/models/open", headers=lumen.auth)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    assert "open" not in listed
    assert detail.status_code == 404
