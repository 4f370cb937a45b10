"""The /api/chat router in a real ASGI app, on each backend. The signed-in user comes from a
test dependency that reads a header and loads the real user (or project) from the database, the
way the portal's session dependency will."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.chat import store
from lumen.chat.api import add_error_handlers, chat_router
from lumen.chat.attachments import AttachmentLimits
from lumen.chat.records import AnswerStats, NewMessage
from lumen.errors import AuthenticationFailed, PermissionDenied
from lumen.identity import store as identity
from lumen.identity.principal import Principal
from tests.chat.conftest import ANN
from tests.chat.pdfs import make_pdf

ANN_H = {"x-test-user": "ann@example.edu"}
BEN_H = {"x-test-user": "ben@example.edu"}


def build_app(engine: AsyncEngine) -> FastAPI:
    async def current_user(request: Request) -> Principal:
        if "x-test-project" in request.headers:
            project = await identity.create_project(
                engine=engine, name=request.headers["x-test-project"], owner_id=ANN
            )
            return Principal(id=project.principal, kind="project", name=project.name)
        email = request.headers.get("x-test-user")
        if email is None:
            raise AuthenticationFailed("Sign in to use the chat.", code="not_signed_in")
        user = await identity.find_user(engine=engine, email=email)
        return Principal(id=user.principal, kind="user", name=user.email, is_admin=user.is_admin)

    app = FastAPI()
    app.include_router(
        chat_router(
            current_user=current_user,
            engine=lambda: engine,
            limits=AttachmentLimits(text_bytes=1_000, image_bytes=2_000, pdf_bytes=5_000),
            max_import_bytes=20_000,
        )
    )
    add_error_handlers(app)
    return app


@pytest.fixture
async def client(people: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(people))
    async with httpx.AsyncClient(transport=transport, base_url="http://lumen.test") as http:
        yield http


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_sign_in_is_required_and_projects_have_no_conversations(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/chat/conversations")
    assert response.status_code == 401 and _error(response)["code"] == "not_signed_in"
    response = await client.get("/api/chat/conversations", headers={"x-test-project": "bot"})
    assert response.status_code == 403 and _error(response)["code"] == "user_required"


async def test_create_list_get_update_delete(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/chat/conversations",
        json={"model": "echo", "temperature": 0.7, "system_prompt": "Be brief."},
        headers=ANN_H,
    )
    assert created.status_code == 201
    body = created.json()
    cid = body["id"]
    assert (body["title"], body["model"], body["temperature"], body["messages"]) == (
        "New chat",
        "echo",
        0.7,
        [],
    )
    listed = (await client.get("/api/chat/conversations", headers=ANN_H)).json()
    assert [c["id"] for c in listed["items"]] == [cid] and listed["next_cursor"] is None

    renamed = await client.patch(f"/api/chat/conversations/{cid}", json={"title": "Trip plan"}, headers=ANN_H)
    assert renamed.status_code == 200 and renamed.json()["title"] == "Trip plan"
    assert renamed.json()["temperature"] == 0.7  # fields not sent do not change
    cleared = await client.patch(
        f"/api/chat/conversations/{cid}", json={"temperature": None, "max_tokens": 300}, headers=ANN_H
    )
    assert (cleared.json()["temperature"], cleared.json()["max_tokens"], cleared.json()["title"]) == (
        None,
        300,
        "Trip plan",
    )
    bad = await client.patch(f"/api/chat/conversations/{cid}", json={"title": None}, headers=ANN_H)
    assert bad.status_code == 400 and _error(bad)["param"] == "title"
    bad = await client.patch(f"/api/chat/conversations/{cid}", json={"temperature": "hot"}, headers=ANN_H)
    assert bad.status_code == 400 and _error(bad)["param"] == "temperature"
    bad = await client.patch(f"/api/chat/conversations/{cid}", json={"temperature": 3}, headers=ANN_H)
    assert bad.status_code == 400 and "between 0 and 2" in _error(bad)["message"]
    bad = await client.post("/api/chat/conversations", json={"colour": "red"}, headers=ANN_H)
    assert bad.status_code == 400 and _error(bad)["param"] == "colour"

    archived = await client.patch(f"/api/chat/conversations/{cid}", json={"archived": True}, headers=ANN_H)
    assert archived.json()["archived"] is True
    assert (await client.get("/api/chat/conversations", headers=ANN_H)).json()["items"] == []
    listed = (await client.get("/api/chat/conversations?archived=true", headers=ANN_H)).json()
    assert [c["id"] for c in listed["items"]] == [cid]

    assert (await client.delete(f"/api/chat/conversations/{cid}", headers=ANN_H)).status_code == 204
    gone = await client.get(f"/api/chat/conversations/{cid}", headers=ANN_H)
    assert gone.status_code == 404 and _error(gone)["code"] == "conversation_not_found"


async def test_another_user_gets_404_everywhere(client: httpx.AsyncClient, people: AsyncEngine) -> None:
    cid = (await client.post("/api/chat/conversations", json={"title": "mine"}, headers=ANN_H)).json()["id"]
    first = await store.append_message(
        engine=people,
        owner_id=ANN,
        conversation_id=cid,
        message=NewMessage(role="user", content="secret words"),
    )
    requests = [
        client.get(f"/api/chat/conversations/{cid}", headers=BEN_H),
        client.patch(f"/api/chat/conversations/{cid}", json={"title": "x"}, headers=BEN_H),
        client.delete(f"/api/chat/conversations/{cid}", headers=BEN_H),
        client.get(f"/api/chat/conversations/{cid}/export?format=json", headers=BEN_H),
        client.put(f"/api/chat/conversations/{cid}/branch", json={"message_id": first.id}, headers=BEN_H),
        client.get("/api/chat/conversations/does-not-exist", headers=BEN_H),
    ]
    for request in requests:
        response = await request
        assert response.status_code == 404 and _error(response)["code"] == "conversation_not_found"
    assert (await client.get("/api/chat/search?q=secret", headers=BEN_H)).json()["items"] == []
    assert (await client.get("/api/chat/conversations", headers=BEN_H)).json()["items"] == []
    still = (await client.get(f"/api/chat/conversations/{cid}", headers=ANN_H)).json()
    assert still["title"] == "mine" and [m["content"] for m in still["messages"]] == ["secret words"]


async def test_pages_search_and_branch_switching(client: httpx.AsyncClient, people: AsyncEngine) -> None:
    ids = [
        (
            await client.post("/api/chat/conversations", json={"title": f"50% of chat_{i}"}, headers=ANN_H)
        ).json()["id"]
        for i in range(5)
    ]
    await client.post("/api/chat/conversations", json={"title": "500 of chatX"}, headers=ANN_H)
    seen: list[str] = []
    url = "/api/chat/search?q=50%25%20of%20chat_&limit=2"
    while True:
        page = (await client.get(url, headers=ANN_H)).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/api/chat/search?q=50%25%20of%20chat_&limit=2&cursor={page['next_cursor']}"
    assert seen == ids[::-1]
    bad = await client.get("/api/chat/conversations?cursor=garbage", headers=ANN_H)
    assert bad.status_code == 400 and _error(bad)["code"] == "invalid_cursor"
    bad = await client.get("/api/chat/conversations?limit=1000", headers=ANN_H)
    assert bad.status_code == 400 and _error(bad)["param"] == "limit"

    cid = ids[0]
    question = await store.append_message(
        engine=people, owner_id=ANN, conversation_id=cid, message=NewMessage(role="user", content="Hi")
    )
    answer = NewMessage(role="assistant", content="Hello!", stats=AnswerStats(model="echo", cost_micro=1_234))
    old = await store.append_message(engine=people, owner_id=ANN, conversation_id=cid, message=answer)
    await store.append_message(
        engine=people,
        owner_id=ANN,
        conversation_id=cid,
        message=NewMessage(role="assistant", content="Hey"),
        parent_id=question.id,
    )
    shown = (await client.get(f"/api/chat/conversations/{cid}", headers=ANN_H)).json()["messages"]
    assert [m["content"] for m in shown] == ["Hi", "Hey"] and len(shown[1]["sibling_ids"]) == 2
    back = await client.put(
        f"/api/chat/conversations/{cid}/branch", json={"message_id": old.id}, headers=ANN_H
    )
    assert [m["content"] for m in back.json()["messages"]] == ["Hi", "Hello!"]
    assert back.json()["messages"][1]["cost"] == "0.001234"  # coins, as a decimal string
    missing = await client.put(
        f"/api/chat/conversations/{cid}/branch", json={"message_id": 10**9}, headers=ANN_H
    )
    assert missing.status_code == 404 and _error(missing)["code"] == "message_not_found"


async def test_exports_download_and_json_imports_back(client: httpx.AsyncClient, people: AsyncEngine) -> None:
    cid = (
        await client.post("/api/chat/conversations", json={"title": "Ré: <script>"}, headers=ANN_H)
    ).json()["id"]
    await store.append_message(
        engine=people,
        owner_id=ANN,
        conversation_id=cid,
        message=NewMessage(role="user", content="<img src=x>"),
    )
    markdown = await client.get(f"/api/chat/conversations/{cid}/export", headers=ANN_H)
    assert markdown.status_code == 200 and markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.headers["x-content-type-options"] == "nosniff"
    disposition = markdown.headers["content-disposition"]
    assert disposition.startswith(
        "attachment; filename=\"R-script.md\"; filename*=UTF-8''R%C3%A9%3A%20%3Cscript%3E.md"
    )
    assert "&lt;img src=x>" in markdown.text and "<img" not in markdown.text

    exported = await client.get(f"/api/chat/conversations/{cid}/export?format=json", headers=ANN_H)
    assert exported.headers["content-type"] == "application/json"
    imported = await client.post("/api/chat/conversations/import", content=exported.content, headers=BEN_H)
    assert imported.status_code == 201
    copy = imported.json()
    assert copy["id"] != cid and copy["title"] == "Ré: <script>"
    assert [m["content"] for m in copy["messages"]] == ["<img src=x>"]
    assert (await client.get(f"/api/chat/conversations/{copy['id']}", headers=BEN_H)).status_code == 200

    wrong = await client.post("/api/chat/conversations/import", content=b'{"format": "other"}', headers=ANN_H)
    assert wrong.status_code == 400 and _error(wrong)["code"] == "invalid_export"
    document = orjson.loads(exported.content)
    document["messages"][0]["content"] = "x" * 30_000
    big = await client.post("/api/chat/conversations/import", content=orjson.dumps(document), headers=ANN_H)
    assert big.status_code == 413 and "20,000 bytes" in _error(big)["message"]
    assert len((await client.get("/api/chat/conversations", headers=ANN_H)).json()["items"]) == 1


async def test_uploads_are_checked_and_extracted(client: httpx.AsyncClient) -> None:
    text = await client.post(
        "/api/chat/attachments?name=../notes.txt", content="hello ✓".encode(), headers=ANN_H
    )
    assert text.status_code == 200
    assert text.json() == {
        "name": "notes.txt",
        "type": "text/plain",
        "size": 9,
        "text_chars": 7,
        "kind": "text",
        "text": "hello ✓",
        "data_url": None,
    }
    pdf = await client.post(
        "/api/chat/attachments?name=a.pdf", content=make_pdf(["Lumen PDF text"]), headers=ANN_H
    )
    assert pdf.json()["kind"] == "pdf" and "Lumen PDF text" in pdf.json()["text"]
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    image = await client.post("/api/chat/attachments?name=p.png", content=png, headers=ANN_H)
    assert image.json()["data_url"].startswith("data:image/png;base64,")

    too_big = await client.post("/api/chat/attachments?name=big.txt", content=b"x" * 1_001, headers=ANN_H)
    assert too_big.status_code == 413 and _error(too_big)["code"] == "attachment_too_large"
    # Over every type's limit: refused before the whole body is read.
    huge = await client.post("/api/chat/attachments?name=huge.bin", content=b"x" * 6_000, headers=ANN_H)
    assert huge.status_code == 413 and _error(huge)["code"] == "request_too_large"
    binary = await client.post("/api/chat/attachments?name=x.exe", content=b"MZ\x90\x00\x03", headers=ANN_H)
    assert binary.status_code == 400 and _error(binary)["code"] == "unsupported_attachment_type"
    nameless = await client.post("/api/chat/attachments", content=b"hi", headers=ANN_H)
    assert nameless.status_code == 400 and _error(nameless)["param"] == "name"
    anonymous = await client.post("/api/chat/attachments?name=a.txt", content=b"hi")
    assert anonymous.status_code == 401


async def test_the_portal_can_add_its_csrf_check_to_every_route(people: AsyncEngine) -> None:
    async def csrf(request: Request) -> None:
        if request.method != "GET" and request.headers.get("x-csrf-token") != "right":
            raise PermissionDenied("Missing or wrong CSRF token.", code="csrf_failed")

    async def ann(request: Request) -> Principal:
        return Principal(id=f"user:{ANN}", kind="user", name="ann@example.edu")

    app = FastAPI()
    app.include_router(chat_router(current_user=ann, engine=lambda: people, dependencies=[Depends(csrf)]))
    add_error_handlers(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://lumen.test"
    ) as http:
        refused = await http.post("/api/chat/conversations", json={})
        assert refused.status_code == 403 and _error(refused)["code"] == "csrf_failed"
        assert (await http.get("/api/chat/conversations")).json()["items"] == []
        made = await http.post("/api/chat/conversations", json={}, headers={"x-csrf-token": "right"})
        assert made.status_code == 201
