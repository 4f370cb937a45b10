"""The chat page's HTTP side through a live Lumen: the page, the model list, streamed answers
through the /v1 gate and proxy (billing, usage records with source "chat", Stop), refusals,
regenerate and edit, attachments and per-conversation settings.

One Lumen and one fake upstream serve the module; each test chats as a user of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from lumen.billing.audit import audit
from lumen.billing.estimate import text_tokens
from lumen.identity import store as identity
from lumen.usage.queries import recent_usage
from lumen.usage.recorder import UsageRecord
from tests.fakes.upstream import WORDS, FakeUpstream
from tests.portal.support import add_user, client, csrf_token, login, parse
from tests.support import ECHO, RunningLumen, model, running_lumen, upstream

Events = list[tuple[str, dict[str, Any]]]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass(frozen=True)
class Person:
    id: int
    email: str

    @property
    def principal(self) -> str:
        return f"user:{self.id}"


def new_person(lumen: RunningLumen) -> Person:
    email = f"u{uuid.uuid4().hex[:12]}@example.edu"
    return Person(add_user(lumen, email), email)


class Chat:
    """A logged-in browser session, speaking to the chat page's JSON and SSE calls."""

    def __init__(self, browser: httpx.Client) -> None:
        self.browser = browser
        self.headers = {"x-csrf-token": csrf_token(browser), "accept": "application/json"}

    def create(self, **settings: Any) -> str:
        answer = self.browser.post("/api/chat/conversations", json=settings, headers=self.headers)
        assert answer.status_code == 201, answer.text
        conversation_id: str = answer.json()["id"]
        return conversation_id

    def models(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.browser.get("/api/chat/models", headers=self.headers).json()[
            "data"
        ]
        return found

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.browser.post(path, json=body, headers={**self.headers, "accept": "text/event-stream"})

    def send(self, conversation_id: str, content: str, **extra: Any) -> Events:
        path = f"/api/chat/conversations/{conversation_id}/messages"
        return self.events(self.post(path, {"content": content, **extra}))

    def events(self, response: httpx.Response) -> Events:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        found = []
        for block in response.text.split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if "event" in lines:
                found.append((lines["event"], orjson.loads(lines["data"])))
        return found

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        answer = self.browser.get(f"/api/chat/conversations/{conversation_id}", headers=self.headers)
        assert answer.status_code == 200, answer.text
        conversation: dict[str, Any] = answer.json()
        return conversation


@contextmanager
def chat(lumen: RunningLumen, person: Person) -> Iterator[Chat]:
    with client(lumen, timeout=30) as browser:
        assert login(browser, person.email).status_code == 303
        yield Chat(browser)


def usage(lumen: RunningLumen, person: Person) -> list[Any]:
    lumen.run(lumen.state.recorder.flush())
    rows: list[Any] = lumen.run(
        recent_usage(engine=lumen.state.engine, limit=100, principal=person.principal)
    )
    return rows


def api_key(lumen: RunningLumen, person: Person) -> dict[str, str]:
    state = lumen.state
    _, plain = lumen.run(
        identity.create_key(
            engine=state.engine, secret=state.authenticator.secret, owner_kind="user", owner_id=person.id
        )
    )
    return {"authorization": f"Bearer {plain}"}


def error(response: httpx.Response) -> dict[str, Any]:
    found: dict[str, Any] = response.json()["error"]
    return found


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server: FakeUpstream) -> FakeUpstream:
    """The module's fake upstream, back in its normal mode for each test."""
    fake_server.mode = "ok"
    fake_server.words = list(WORDS)
    fake_server.requests.clear()
    fake_server.events.clear()
    return fake_server


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeUpstream) -> Iterator[RunningLumen]:
    """One Lumen for the module; each test chats as a new user, so their data never mix."""
    config = {
        "models": [
            model("echo", ECHO, description="Repeats you", price={"input": 2, "output": 3}),
            model("fake", upstream(fake_server.url), price={"input": 0, "output": 1}),
            model(
                "vision",
                upstream(fake_server.url, upstream_model="fake"),
                capabilities={"modalities": ["text", "image"]},
            ),
            model("pricey", ECHO, price={"input": 1_000_000_000, "output": 0}),
            model("limited", ECHO),
            model("closed", ECHO, access="blocked"),
            model("careful", ECHO, access={"acknowledge": True, "notice": "Research use only."}),
            model("down", upstream("http://127.0.0.1:9/v1")),
            model("vectors", upstream(fake_server.url), kind="embeddings"),
        ],
        "rate_limits": {"default": {"models": {"limited": {"rpm": 1}}}},
        "billing": {"default_pool": {"refresh": 0}},  # no refill: balances are exact
    }
    with running_lumen(tmp_path_factory.mktemp("chat"), config) as running:
        yield running


@pytest.fixture
def person(lumen: RunningLumen) -> Person:
    """A new user of the module's Lumen; `chat(lumen, person)` logs them in."""
    return new_person(lumen)


# --- the page and the model list ---------------------------------------------------------------


def test_the_page_lists_only_usable_chat_models(lumen: RunningLumen, person: Person) -> None:
    with chat(lumen, person) as session:
        page = session.browser.get("/chat")
        listed = session.browser.get("/api/chat/models", headers=session.headers).json()["data"]
        v1 = httpx.get(lumen.v1 + "/models", headers=api_key(lumen, person)).json()["data"]
        opened = session.browser.get("/chat/no-such-conversation")
    assert page.status_code == 200
    parsed = parse(page.text)
    assert parsed.inline_code == []
    assert all((s["src"] or "").startswith("/static/") for s in parsed.scripts)
    assert '<a href="/chat" aria-current="page">Chat</a>' in page.text
    names = [m["name"] for m in listed]
    assert names == ["echo", "fake", "vision", "pricey", "limited", "careful", "down"]
    # Exactly what /v1/models lists for this user, less the embeddings model.
    assert [m["id"] for m in v1 if m["kind"] == "chat"] == names
    echo = listed[0]
    careful = listed[names.index("careful")]
    assert echo["pricing"] == {"input": 2.0, "output": 3.0} and echo["description"] == "Repeats you"
    assert careful["needs_ack"] and careful["notice"] == "Research use only." and careful["notice_hash"]
    assert listed[names.index("vision")]["capabilities"] == ["text", "images"]
    assert 'value="careful"' in page.text and 'data-needs-ack="yes"' in page.text
    assert 'value="closed"' not in page.text and 'value="vectors"' not in page.text
    assert opened.status_code == 200  # the page itself says when a conversation is not found


def test_the_chat_calls_need_a_session_and_its_csrf_token(lumen: RunningLumen, person: Person) -> None:
    anonymous = httpx.post(
        lumen.url + "/api/chat/conversations/x/messages",
        json={"content": "hi"},
        headers={"accept": "application/json"},
    )
    assert anonymous.status_code == 403 and error(anonymous)["code"] == "csrf_failed"
    api_style = httpx.get(lumen.url + "/api/chat/conversations", headers={"accept": "application/json"})
    assert api_style.status_code == 401 and error(api_style)["code"] == "login_required"
    other = new_person(lumen)
    with chat(lumen, person) as mine, chat(lumen, other) as theirs:
        conversation = mine.create(model="echo")
        no_token = mine.browser.post(
            f"/api/chat/conversations/{conversation}/messages",
            json={"content": "hi"},
            headers={"accept": "application/json"},
        )
        assert no_token.status_code == 403 and error(no_token)["code"] == "csrf_failed"
        foreign = theirs.post(f"/api/chat/conversations/{conversation}/messages", {"content": "hi"})
        assert foreign.status_code == 404 and error(foreign)["code"] == "conversation_not_found"
        assert mine.conversation(conversation)["messages"] == []  # nothing was stored by either


# --- answers -----------------------------------------------------------------------------------


def test_an_answer_streams_and_is_stored_with_its_tokens_coins_and_ttft(
    lumen: RunningLumen, person: Person
) -> None:
    with chat(lumen, person) as session:
        conversation = session.create(model="echo")
        events = session.send(conversation, "Hello there, model")
        stored = session.conversation(conversation)
    names = [name for name, _ in events]
    assert names[0] == "user" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    assert "".join(data["text"] for name, data in events if name == "delta") == "Hello there, model"
    user, answer = stored["messages"]
    assert events[0][1]["message"]["id"] == user["id"] and events[0][1]["title"] == "Hello there, model"
    assert stored["title"] == "Hello there, model"
    done = events[-1][1]
    assert done["message"] == answer
    assert answer["content"] == "Hello there, model" and answer["parent_id"] == user["id"]
    assert answer["model"] == "echo" and answer["ttft_ms"] is not None and answer["finish_reason"] == "stop"
    [record] = usage(lumen, person)
    assert record.source == "chat" and record.status == 200
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (
        record.prompt_tokens,
        record.completion_tokens,
    )
    cost = 2 * record.prompt_tokens + 3 * record.completion_tokens
    assert record.cost_micro == cost and Decimal(answer["cost"]) * 1_000_000 == cost
    assert done["balance"] == "99.99 coins"  # 100 coins, less what the answer cost, rounded down


def test_a_stopped_answer_is_kept_and_billed_for_what_was_generated(
    lumen: RunningLumen, person: Person, fake: FakeUpstream
) -> None:
    fake.mode = "slow"
    fake.words = [f" w{i}" for i in range(60)]
    with chat(lumen, person) as session:
        conversation = session.create(model="fake")
        path = f"/api/chat/conversations/{conversation}/messages"
        deltas = 0
        headers = {**session.headers, "accept": "text/event-stream"}
        with session.browser.stream("POST", path, json={"content": "count"}, headers=headers) as response:
            for line in response.iter_lines():
                if line == "event: delta":
                    deltas += 1
                    if deltas == 3:
                        break  # the page's Stop: the fetch is aborted, the connection closes
        assert fake.wait_for_event("cancelled")  # the upstream request was cancelled
        answer = None
        for _ in range(200):  # the server stores the partial answer once it notices
            messages = session.conversation(conversation)["messages"]
            if len(messages) == 2:
                answer = messages[1]
                break
            time.sleep(0.02)
    assert answer is not None and answer["stopped"]
    assert answer["content"].startswith(" w0 w1") and len(answer["content"].split()) < 60
    [record] = usage(lumen, person)
    assert record.status == 499 and record.source == "chat" and record.finish_reason == "cancelled"
    # Billed exactly for the text that was generated (one micro-coin per output token).
    assert record.completion_tokens == text_tokens(answer["content"]) == answer["completion_tokens"]
    assert record.cost_micro == record.completion_tokens == Decimal(answer["cost"]) * 1_000_000
    bank = lumen.state.bank
    lumen.run(bank.flush())
    view = lumen.run(bank.balance(person.principal, params=lumen.state.gate.pool_params(())))
    assert view.reserved_micro == 0 and view.balance_micro == 100_000_000 - record.cost_micro
    assert lumen.run(audit(lumen.state.engine)) == []


def test_stop_before_the_first_token_cancels_the_upstream(
    lumen: RunningLumen, person: Person, fake: FakeUpstream
) -> None:
    fake.mode = "hang_stream"  # the backend accepts, then never sends a token
    with chat(lumen, person) as session:
        conversation = session.create(model="fake")
        path = f"/api/chat/conversations/{conversation}/messages"
        headers = {**session.headers, "accept": "text/event-stream"}
        with session.browser.stream(
            "POST", path, json={"content": "think hard"}, headers=headers
        ) as response:
            assert response.status_code == 200
            assert fake.wait_for_event("hung")
        assert fake.wait_for_event("cancelled")
        messages: list[dict[str, Any]] = []
        for _ in range(200):
            messages = session.conversation(conversation)["messages"]
            if len(messages) == 2:
                break
            time.sleep(0.02)
    question, answer = messages
    assert question["content"] == "think hard"
    assert answer["stopped"] and answer["content"] == "" and answer["completion_tokens"] == 0
    [record] = usage(lumen, person)
    assert record.status == 499 and record.ttft_ms is None and record.cost_micro == 0
    view = lumen.run(lumen.state.bank.balance(person.principal, params=lumen.state.gate.pool_params(())))
    assert view.reserved_micro == 0


def test_a_backend_that_fails_mid_answer_ends_with_an_error_event(
    lumen: RunningLumen, person: Person, fake: FakeUpstream
) -> None:
    fake.mode = "malformed_sse"  # one chunk with no text, then a broken one
    with chat(lumen, person) as session:
        conversation = session.create(model="fake")
        events = session.send(conversation, "go")
        stored = session.conversation(conversation)["messages"]
    name, data = events[-1]
    assert name == "error" and data["error"]["status"] == 502
    assert data["error"]["code"] == "upstream_protocol_error" and data["message"] is None
    assert [m["role"] for m in stored] == ["user"]  # no empty answer is stored; the page offers a retry
    [record] = usage(lumen, person)
    assert (record.source, record.status, record.error_code) == ("chat", 502, "upstream_protocol_error")


# --- refusals ----------------------------------------------------------------------------------


DOWN = {(502, "upstream_connection_error"), (503, "model_unavailable")}
"""A backend that cannot be reached: refused at the connection, or (once the health checks or an
earlier request marked it down) without trying."""


@pytest.mark.parametrize(
    ("model_name", "refusals"),
    [
        ("pricey", {(429, "insufficient_quota")}),
        ("limited", {(429, "rate_limit_exceeded")}),
        ("closed", {(403, "model_not_allowed")}),
        ("careful", {(403, "acknowledgement_required")}),
        ("down", DOWN),
    ],
)
def test_refusals_are_http_errors_and_keep_the_message(
    lumen: RunningLumen, person: Person, model_name: str, refusals: set[tuple[int, str]]
) -> None:
    with chat(lumen, person) as session:
        conversation = session.create()
        if model_name == "limited":
            session.send(conversation, "the first one is allowed", model="limited")
        refused = session.post(
            f"/api/chat/conversations/{conversation}/messages", {"content": "please", "model": model_name}
        )
        stored = session.conversation(conversation)
    assert (refused.status_code, error(refused)["code"]) in refusals, refused.text
    assert stored["messages"][-1]["content"] == "please" and stored["messages"][-1]["role"] == "user"
    assert stored["model"] == model_name  # the conversation remembers the choice
    record = usage(lumen, person)[0]
    assert (record.source, record.model) == ("chat", model_name)
    assert (record.status, record.error_code) == (refused.status_code, error(refused)["code"])


def test_acknowledging_inline_opens_the_model(lumen: RunningLumen, person: Person) -> None:
    with chat(lumen, person) as session:
        conversation = session.create(model="careful")
        refused = session.post(f"/api/chat/conversations/{conversation}/messages", {"content": "hi"})
        assert refused.status_code == 403
        [listed] = [m for m in session.models() if m["name"] == "careful"]
        stale = session.browser.post(
            "/api/chat/models/careful/acknowledge", json={"notice_hash": "0" * 64}, headers=session.headers
        )
        assert stale.status_code == 400 and error(stale)["code"] == "notice_changed"
        acknowledged = session.browser.post(
            "/api/chat/models/careful/acknowledge",
            json={"notice_hash": listed["notice_hash"]},
            headers=session.headers,
        )
        assert acknowledged.status_code == 200 and acknowledged.json()["model"] == "careful"
        [after] = [m for m in session.models() if m["name"] == "careful"]
        # The refused message is still there: answering it is the page's "Try again".
        question = session.conversation(conversation)["messages"][-1]
        events = session.events(
            session.post(f"/api/chat/conversations/{conversation}/messages/{question['id']}/regenerate", {})
        )
    assert after["acknowledged"] and not after["needs_ack"]
    assert events[-1][0] == "done" and events[-1][1]["message"]["content"] == "hi"
    assert "user" not in [name for name, _ in events]


# --- branches ----------------------------------------------------------------------------------


def test_regenerate_and_edit_make_alternatives(lumen: RunningLumen, person: Person) -> None:
    with chat(lumen, person) as session:
        conversation = session.create(model="echo")
        session.send(conversation, "first question")
        question, first_answer = session.conversation(conversation)["messages"]
        regenerated = session.events(
            session.post(
                f"/api/chat/conversations/{conversation}/messages/{first_answer['id']}/regenerate", {}
            )
        )
        second_answer = regenerated[-1][1]["message"]
        edited = session.events(
            session.post(
                f"/api/chat/conversations/{conversation}/messages/{question['id']}/edit",
                {"content": "second question"},
            )
        )
        new_question = edited[0][1]["message"]
        shown = session.conversation(conversation)["messages"]
        back = session.browser.put(
            f"/api/chat/conversations/{conversation}/branch",
            json={"message_id": question["id"]},
            headers=session.headers,
        ).json()["messages"]
        edit_answer = session.post(
            f"/api/chat/conversations/{conversation}/messages/{second_answer['id']}/edit", {"content": "x"}
        )
    assert "user" not in [name for name, _ in regenerated] and regenerated[-1][0] == "done"
    assert second_answer["sibling_ids"] == [first_answer["id"], second_answer["id"]]
    assert edited[0][0] == "user" and new_question["sibling_ids"] == [question["id"], new_question["id"]]
    assert [m["content"] for m in shown] == ["second question", "second question"]
    assert [m["content"] for m in back] == ["first question", "first question"]
    assert back[1]["id"] == second_answer["id"]  # the newest answer of that branch
    assert edit_answer.status_code == 400  # only the user's own messages are edited and resent


# --- attachments and settings -------------------------------------------------------------------


def test_a_text_attachment_reaches_the_model_and_is_kept(lumen: RunningLumen, person: Person) -> None:
    with chat(lumen, person) as session:
        uploaded = session.browser.post(
            "/api/chat/attachments",
            params={"name": "notes.txt"},
            content=b"The answer is 42.\n",
            headers=session.headers,
        )
        assert uploaded.status_code == 200, uploaded.text
        conversation = session.create(model="echo")
        events = session.send(conversation, "Summarise", attachments=[uploaded.json()])
        user = session.conversation(conversation)["messages"][0]
    answer = events[-1][1]["message"]["content"]
    assert answer.startswith("Summarise") and "[Attachment: notes.txt]" in answer
    assert "The answer is 42." in answer
    assert user["attachments"] == [{"name": "notes.txt", "type": "text/plain", "size": 18, "text_chars": 18}]


def test_images_go_only_to_models_that_take_them(
    lumen: RunningLumen, person: Person, fake: FakeUpstream
) -> None:
    with chat(lumen, person) as session:
        image = session.browser.post(
            "/api/chat/attachments", params={"name": "dot.png"}, content=PNG, headers=session.headers
        ).json()
        assert image["kind"] == "image" and image["data_url"].startswith("data:image/png;base64,")
        conversation = session.create(model="echo")
        refused = session.post(
            f"/api/chat/conversations/{conversation}/messages",
            {"content": "what is it?", "attachments": [image]},
        )
        assert refused.status_code == 400 and error(refused)["code"] == "images_not_supported"
        assert session.conversation(conversation)["messages"] == []  # refused before storing
        events = session.send(conversation, "what is it?", attachments=[image], model="vision")
    assert events[-1][0] == "done"
    content = fake.requests[-1]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "what is it?"}
    assert content[1] == {"type": "image_url", "image_url": {"url": image["data_url"]}}


def image_parts(request: dict[str, Any]) -> list[str]:
    """The data URLs of every image part of the messages a model was sent."""
    return [
        part["image_url"]["url"]
        for message in request["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


def test_an_image_stays_part_of_the_conversation(
    lumen: RunningLumen, person: Person, fake: FakeUpstream
) -> None:
    with chat(lumen, person) as session:
        image = session.browser.post(
            "/api/chat/attachments", params={"name": "dot.png"}, content=PNG, headers=session.headers
        ).json()
        conversation = session.create(model="vision")
        session.send(conversation, "what is it?", attachments=[image])
        followed = session.send(conversation, "and its colour?")
        follow_up = fake.requests[-1]
        answer = followed[-1][1]["message"]
        regenerated = session.events(
            session.post(f"/api/chat/conversations/{conversation}/messages/{answer['id']}/regenerate", {})
        )
        regenerate = fake.requests[-1]
        # A model without images still answers the rest of the conversation.
        without = session.send(conversation, "describe it in words", model="fake")
        blind = fake.requests[-1]
        listing = session.browser.get(f"/api/chat/conversations/{conversation}", headers=session.headers)
    assert image_parts(follow_up) == [image["data_url"]]
    assert follow_up["messages"][0]["content"][0] == {"type": "text", "text": "what is it?"}
    assert follow_up["messages"][-1]["content"] == "and its colour?"
    assert regenerated[-1][0] == "done" and image_parts(regenerate) == [image["data_url"]]
    assert without[-1][0] == "done" and image_parts(blind) == []
    assert blind["messages"][0]["content"] == (
        "what is it?\n\n[An image, dot.png, was attached here; the chosen model cannot see images.]"
    )
    # The page's listing names the image but never carries its data.
    assert listing.status_code == 200 and image["data_url"].split(",", 1)[1] not in listing.text
    first = listing.json()["messages"][0]["attachments"]
    assert first == [{"name": "dot.png", "type": "image/png", "size": len(PNG), "text_chars": 0}]


def test_an_image_over_the_limit_or_not_base64_is_refused_before_storing(
    lumen: RunningLumen, person: Person
) -> None:
    big = "data:image/png;base64," + "A" * (4 * 5_000_004 // 3)  # 5,000,004 bytes of image
    with chat(lumen, person) as session:
        conversation = session.create(model="vision")
        sent = [
            session.post(
                f"/api/chat/conversations/{conversation}/messages",
                {"content": "x", "attachments": [{**attachment, "kind": "image", "type": "image/png"}]},
            )
            for attachment in (
                {"name": "big.png", "size": 1, "data_url": big},
                {"name": "bad.png", "size": 1, "data_url": "data:image/png;base64,not*base64"},
            )
        ]
        stored = session.conversation(conversation)["messages"]
    assert sent[0].status_code == 413 and error(sent[0])["code"] == "attachment_too_large"
    assert sent[1].status_code == 400 and "bad.png" in error(sent[1])["message"]
    assert stored == []


def test_the_conversation_settings_are_sent_with_each_answer(
    lumen: RunningLumen, person: Person, fake: FakeUpstream
) -> None:
    with chat(lumen, person) as session:
        conversation = session.create(model="fake", system_prompt="Answer in French.", temperature=0.2)
        session.browser.patch(
            f"/api/chat/conversations/{conversation}", json={"max_tokens": 50}, headers=session.headers
        )
        session.send(conversation, "Hello")
        session.send(conversation, "Again")
    sent = fake.requests[-1]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 and sent["stream"] is True
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hello from the fake upstream."},
        {"role": "user", "content": "Again"},
    ]


def test_bad_sends_are_refused_before_anything_is_stored(lumen: RunningLumen, person: Person) -> None:
    with chat(lumen, person) as session:
        conversation = session.create()
        url = f"/api/chat/conversations/{conversation}/messages"
        no_model = session.post(url, {"content": "hi"})
        empty = session.post(url, {"content": " ", "model": "echo"})
        unknown = session.post(url, {"content": "hi", "model": "nope"})
        wrong = session.post(url, {"content": 5})
        stored = session.conversation(conversation)
    assert no_model.status_code == 400 and error(no_model)["code"] == "model_required"
    assert empty.status_code == 400 and error(empty)["code"] == "empty_message"
    assert unknown.status_code == 404 and error(unknown)["code"] == "model_not_found"
    assert wrong.status_code == 400 and error(wrong)["param"] == "content"
    assert stored["messages"] == [] and stored["model"] is None


def test_usage_records_tell_the_page_from_the_api(lumen: RunningLumen, person: Person) -> None:
    with chat(lumen, person) as session:
        conversation = session.create(model="echo")
        session.send(conversation, "from the page")
    httpx.post(
        lumen.v1 + "/chat/completions",
        headers=api_key(lumen, person),
        json={"model": "echo", "messages": [{"role": "user", "content": "from the API"}]},
    )
    records: list[UsageRecord] = usage(lumen, person)
    assert sorted(r.source for r in records) == ["api", "chat"]


def test_only_the_chat_api_goes_to_the_portal(lumen: RunningLumen) -> None:
    """The portal claims the `/api/` paths its routers declare and no other."""
    accept = {"accept": "application/json"}
    chat_api = httpx.get(lumen.url + "/api/chat/conversations", headers=accept)
    assert chat_api.status_code == 401 and error(chat_api)["code"] == "login_required"
    assert "content-security-policy" in chat_api.headers  # answered by the portal
    other = httpx.get(lumen.url + "/api/chatter", headers=accept)
    assert other.status_code == 404 and error(other)["code"] == "unknown_url"
    assert "content-security-policy" not in other.headers  # the API's own 404
