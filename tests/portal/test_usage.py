"""The Usage page through a live Lumen: the API's token counts, the chart's data, the rate limits
beside the last minute, the CSV export, and what administrators and project managers see."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from lumen.portal.routes.usage import _cell, coins_text
from tests.portal.roles import Cast, running_cast
from tests.portal.support import parse


@pytest.fixture(scope="module")
def cast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cast]:
    with running_cast(Path(tmp_path_factory.mktemp("usage"))) as running:
        yield running


class Tables(HTMLParser):
    """Every table of a page by id, as rows of cell texts (header cells included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id") or f"t{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "caption":
            self._in_caption = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "caption":
            self._in_caption = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._in_caption:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def test_recent_requests_show_the_tokens_the_api_returned(cast: Cast) -> None:
    answers = [cast.chat("carol@example.edu", max_tokens=m).json() for m in (3, 50)]
    with cast.session("carol@example.edu") as browser:
        page = browser.get("/usage")
    assert page.status_code == 200
    assert parse(page.text).inline_code == []
    rows = tables(page.text)["recent-requests"]
    header, newest, older = rows[0], rows[1], rows[2]
    prompt, completion = header.index("Input tokens"), header.index("Output tokens")
    for row, answer in ((newest, answers[1]), (older, answers[0])):
        assert row[prompt] == str(answer["usage"]["prompt_tokens"])
        assert row[completion] == str(answer["usage"]["completion_tokens"])
        assert row[header.index("Model")] == "echo" and row[header.index("Source")] == "API"
        assert row[header.index("Key")].startswith("carol laptop (sk_")
    # echo costs 1000 coins per million input tokens and 2000 per million output tokens.
    cost = answers[1]["usage"]["prompt_tokens"] * 1000 + answers[1]["usage"]["completion_tokens"] * 2000
    assert newest[header.index("Coins")] == coins_text(cost)


def test_the_chart_data_counts_every_request_by_group(cast: Cast) -> None:
    for _ in range(2):
        assert cast.chat("dave@example.edu").status_code == 200
    with cast.session("dave@example.edu") as browser:
        data = browser.get("/usage/data", params={"period": "day", "by": "key"}).json()
        by_source = browser.get("/usage/data", params={"period": "year", "by": "source"}).json()
        bad = browser.get("/usage/data", params={"period": "decade"}, headers={"accept": "application/json"})
    assert len(data["buckets"]) == 24 and len(data["labels"]) == 24
    assert [d["label"] for d in data["datasets"]] == [
        next(d["label"] for d in data["datasets"] if d["label"].startswith("dave laptop"))
    ]
    assert sum(data["datasets"][0]["requests"]) == 2 == data["totals"]["requests"]
    assert data["datasets"][0]["requests"][-1] == 2  # both in the current hour
    assert [d["label"] for d in by_source["datasets"]] == ["API"] and len(by_source["buckets"]) == 12
    assert bad.status_code == 400 and "period" in bad.json()["error"]["message"]


def test_rate_limits_beside_the_last_minute(cast: Cast) -> None:
    for _ in range(3):
        assert cast.chat("bob@example.edu").status_code == 200
    with cast.session("bob@example.edu") as browser:
        page = browser.get("/usage").text
    limits = tables(page)["limits-table"]
    header, everything = limits[0], limits[1]
    assert everything[0] == "All your requests together"
    assert everything[header.index("Requests per minute")] == "100"  # rate_limits.default
    assert everything[header.index("Tokens per minute")] == "50,000"
    used = everything[header.index("Requests, last minute")]
    assert used.startswith("3 ") and "3 of 100" in used  # the number and its meter
    # What the limiter itself says is left: 3 were taken, and it refills continuously (100 a minute),
    # so anything from 97 to 100 is right however long the test took.
    left = re.search(r"<strong>(\d+) requests and ([\d,]+) tokens left right now</strong>", page)
    assert left is not None and 97 <= int(left.group(1)) <= 100


def test_a_group_members_limits_are_the_groups(cast: Cast) -> None:
    with cast.session("ada@example.edu") as browser:
        limits = tables(browser.get("/usage").text)["limits-table"]
    assert limits[1][limits[0].index("Requests per minute")] == "600"  # physics is more generous


def test_csv_export_has_every_request_of_the_period(cast: Cast) -> None:
    cast.chat("carol@example.edu")
    with cast.session("carol@example.edu") as browser:
        export = browser.get("/usage/export.csv", params={"period": "day"})
        page = browser.get("/usage").text
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    recent = tables(page)["recent-requests"]
    assert len(rows) == len(recent) - 1  # every request of carol's, all of them today
    assert {r["who"] for r in rows} == {"carol@example.edu"}
    assert rows[0]["prompt_tokens"] == recent[1][recent[0].index("Input tokens")]
    assert all(r["principal"] == f"user:{cast.ids['carol@example.edu']}" for r in rows)


def test_only_administrators_export_the_endpoint_that_served(cast: Cast) -> None:
    """An endpoint's label is its URL, which may name internal hosts."""
    cast.chat("carol@example.edu")
    with cast.session("carol@example.edu") as browser:
        own = browser.get("/usage/export.csv", params={"period": "day"}).text
    with cast.session("admin@localhost") as admin:
        everyone = admin.get("/usage/export.csv", params={"period": "day", "who": "everyone"}).text
    own_rows = list(csv.DictReader(io.StringIO(own)))
    assert own_rows and "endpoint" not in own_rows[0] and "local:echo" not in own
    admin_rows = list(csv.DictReader(io.StringIO(everyone)))
    assert {r["endpoint"] for r in admin_rows} >= {"local:echo"}


def test_spreadsheet_formulas_are_neutralised() -> None:
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _cell("@SUM(A1)") == "'@SUM(A1)"
    assert _cell("echo") == "echo" and _cell(12) == 12 and _cell(None) == ""


def test_administrators_choose_whose_usage(cast: Cast) -> None:
    cast.chat("carol@example.edu")
    cast.chat("ada@example.edu")
    with cast.session("admin@localhost") as admin:
        carol = admin.get("/usage", params={"who": "user", "user": "Carol@Example.edu"})
        group = admin.get("/usage", params={"who": "group", "group": "physics"})
        everyone = admin.get("/usage", params={"who": "everyone", "by": "source"})
        unknown = admin.get("/usage", params={"who": "user", "user": "nobody@example.edu"})
        no_group = admin.get("/usage", params={"who": "group", "group": "chemistry"})
    assert "<h1>Usage of carol@example.edu</h1>" in carol.text
    carol_rows = tables(carol.text)["recent-requests"]
    assert all(row[carol_rows[0].index("Key")].startswith("carol laptop") for row in carol_rows[1:])
    group_rows = tables(group.text)["recent-requests"]
    assert {row[group_rows[0].index("Who")] for row in group_rows[1:]} == {"ada@example.edu"}
    who = tables(everyone.text)["recent-requests"]
    assert {"carol@example.edu", "ada@example.edu"} <= {row[who[0].index("Who")] for row in who[1:]}
    assert unknown.status_code == 404 and "No user with the email nobody@example.edu" in unknown.text
    assert no_group.status_code == 404 and "no group named" in no_group.text


def test_a_manager_sees_the_projects_usage(cast: Cast) -> None:
    key = httpx.post(
        cast.lumen.url + "/api/admin/keys",
        headers=cast.lumen.auth,
        json={"project_id": cast.project_id, "name": "pipeline"},
    ).json()["key"]
    answer = httpx.post(
        cast.lumen.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "echo", "messages": [{"role": "user", "content": "project work"}]},
    ).json()
    with cast.session("bob@example.edu") as bob:
        page = bob.get("/usage", params={"who": "project", "project": cast.project_id})
    assert "<h1>Usage of the project genomics</h1>" in page.text
    rows = tables(page.text)["recent-requests"]
    assert rows[1][rows[0].index("Key")].startswith("pipeline (sk_")
    assert rows[1][rows[0].index("Input tokens")] == str(answer["usage"]["prompt_tokens"])


def test_a_stopped_request_reads_stopped_not_an_error_code(cast: Cast) -> None:
    from lumen.usage.recorder import UsageRecord

    state = cast.lumen.state
    principal = f"user:{cast.ids['carol@example.edu']}"
    record = UsageRecord(
        request_id="stopped-by-carol",
        principal=principal,
        model="echo",
        source="api",
        operation="chat.completions",
        prompt_tokens=3,
        completion_tokens=1,
        latency_ms=5.0,
        status=499,
        finish_reason="cancelled",
    )
    cast.lumen.loop.call_soon_threadsafe(state.recorder.record, record)
    with cast.session("carol@example.edu") as browser:
        page = browser.get("/usage").text
        export = browser.get("/usage/export.csv", params={"period": "day"})
    recent = tables(page)["recent-requests"]
    statuses = [row[recent[0].index("Status")] for row in recent[1:]]
    assert "Stopped" in statuses and not any("499" in s for s in statuses)
    rows = {r["request_id"]: r for r in csv.DictReader(io.StringIO(export.text))}
    assert rows["stopped-by-carol"]["outcome"] == "Stopped"
