"""The chat page in a real browser: streaming and Stop, regenerate and edit with alternatives, an
attachment, the inline acknowledgement, refusals in plain words, hostile model output, the
conversation list, keyboard use, phone width, and axe-core in light and dark mode.

The echo model answers with the user's own message, so a test controls exactly what the page must
render; `[[echo:slow:N]]` makes it wait N ms between chunks, for Stop."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, expect

from lumen.chat import store
from lumen.chat.records import NewMessage
from tests.browser.axe import assert_accessible
from tests.browser.conftest import DESKTOP, PHONE, Console, screenshot
from tests.portal.support import PASSWORD, add_user
from tests.support import ECHO, RunningLumen, model, running_lumen, upstream

pytestmark = pytest.mark.browser

CONFIG: dict[str, Any] = {
    "models": [
        model(
            "echo",
            ECHO,
            description="Repeats your last message",
            price={"input": 1, "output": 2},
            capabilities={"context_window": 8192},
        ),
        model("careful", ECHO, access={"acknowledge": True, "notice": "For **research use** only."}),
        model("pricey", ECHO, price={"input": 1_000_000_000, "output": 0}),
        model("down", upstream("http://127.0.0.1:9/v1")),
    ],
    "billing": {"default_pool": {"refresh": 0}},  # no refill: the balance shown is exact
}

RICH = r"""## Results

| n | square |
|---|--------|
| 2 | 4 |

```python
def square(x):
    return x * x  # the area
```

Euler: $e^{i\pi} + 1 = 0$, and

$$\int_0^1 x^2\,dx = \frac{1}{3}$$

It costs $5 and $10."""

HOSTILE = """<script>window.pwned = "script"</script>
<img src=x onerror="window.pwned = 'img'">
<svg onload="window.pwned = 'svg'"><script>window.pwned = 'svg-script'</script></svg>
<iframe src="javascript:window.pwned='iframe'"></iframe>
<a href="javascript:window.pwned='raw-link'">raw link</a>
<details open ontoggle="window.pwned = 'details'">x</details>
[md link](javascript:window.pwned='md-link') and [data link](data:text/html,<script>alert(1)</script>)
![tracker](https://evil.example/pixel.png) ![broken](x" onerror="window.pwned='alt')
<style>body { display: none }</style>
$\\href{javascript:alert(1)}{math link}$ and $\\htmlStyle{color:red}{styled}$
[ok](https://example.edu/page)"""


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("lumen"), CONFIG) as running:
        yield running


def log_in(page: Page, lumen: RunningLumen) -> int:
    """Logs in a new user (so tests never see each other's conversations) and opens the chat."""
    email = f"c{uuid.uuid4().hex[:6]}@ex.edu"  # short: a long one widens the header on a phone
    user_id = add_user(lumen, email)
    page.goto(lumen.url + "/login?next=/chat")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    page.wait_for_url(re.compile(r".*/chat$"))
    expect(page.locator("#sidebar-status")).to_have_text("No conversations yet.")
    return user_id


def composer(page: Page) -> Locator:
    return page.get_by_role("textbox", name="Message", exact=True)


def send(page: Page, text: str) -> Locator:
    """Sends `text` with Enter and returns the finished answer."""
    composer(page).fill(text)
    composer(page).press("Enter")
    answer = page.locator("article.message.assistant").last
    expect(answer.locator(".message-meta")).to_contain_text("coins")
    return answer


def test_send_stream_and_render(page: Page, lumen: RunningLumen, console: Console) -> None:
    log_in(page, lumen)
    expect(page.locator("#model-info")).to_contain_text("Coins per million tokens: 1 input, 2 output")
    first_option = page.get_by_label("Model").locator("option").first
    expect(first_option).to_have_text("echo — 1 / 2 coins per 1M tokens")
    answer = send(page, RICH)
    assert re.search(r"/chat/[\w-]{20,}$", page.url)  # the new conversation has its own address
    expect(page.locator("#chat-title")).to_have_text("Results")
    expect(page.get_by_role("link", name="Results")).to_have_attribute("aria-current", "page")
    expect(answer.locator("table td").first).to_have_text("2")
    expect(answer.locator(".code-language")).to_have_text("python")
    expect(answer.locator("code .hljs-keyword").first).to_have_text("def")
    expect(answer.locator(".katex")).to_have_count(2)
    expect(answer.locator(".math-display .katex-display")).to_have_count(1)
    expect(answer).to_contain_text("It costs $5 and $10.")  # currency is not math
    # KaTeX's layout survives the policy: its styles were applied through the CSSOM.
    strut = answer.locator(".katex .katex-strut").first
    assert strut.evaluate("node => node.style.height") != ""
    meta = answer.locator(".message-meta")
    expect(meta).to_contain_text(
        re.compile(r"echo · \d+ in · \d+ out tokens · [\d.]+ coins · first token after")
    )
    expect(page.locator("#balance")).to_have_text("99.99 coins")
    expect(page.locator("#chat-live")).to_contain_text("Answer finished.")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    answer.get_by_role("button", name="Copy code").click()
    assert (
        page.evaluate("() => navigator.clipboard.readText()")
        == "def square(x):\n    return x * x  # the area\n"
    )
    expect(answer.get_by_role("button", name="Copied")).to_be_visible()

    page.reload()  # the conversation is stored on the server
    expect(page.locator("article.message")).to_have_count(2)
    expect(page.locator("article.message.assistant .katex")).to_have_count(2)
    assert_accessible(page)
    screenshot(page, "chat")
    assert console.errors() == []


def test_stop_keeps_the_partial_answer(page: Page, lumen: RunningLumen, console: Console) -> None:
    log_in(page, lumen)
    words = " ".join(f"w{i}" for i in range(40))
    composer(page).fill(f"[[echo:slow:150]] {words}")
    composer(page).press("Enter")
    streaming = page.locator("article.message.assistant.streaming")
    expect(streaming).to_contain_text("w2")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(composer(page)).to_be_focused()
    stopped = page.locator("article.message.assistant.stopped")
    expect(stopped.locator(".tag")).to_have_text("Stopped")  # the stored answer, with its bill
    expect(stopped.locator(".message-meta")).to_contain_text("coins")
    text = stopped.locator(".message-body").inner_text()
    assert text.startswith("[[echo:slow:150]] w0") and "w39" not in text

    page.reload()
    expect(page.locator("article.message.assistant.stopped .tag")).to_have_text("Stopped")
    assert page.locator("article.message.assistant .message-body").inner_text() == text

    # Esc stops too: regenerate, then press Escape.
    page.get_by_role("button", name="Regenerate this answer").click()
    expect(page.locator("article.message.assistant.streaming")).to_contain_text("w1")
    page.keyboard.press("Escape")
    expect(page.locator("article.message.assistant .version-label")).to_have_text("2 / 2")
    expect(page.locator("article.message.assistant .tag")).to_have_text("Stopped")
    assert console.errors() == []


def test_regenerate_edit_and_switch_versions(page: Page, lumen: RunningLumen) -> None:
    log_in(page, lumen)
    send(page, "alpha")
    answer = page.locator("article.message.assistant")
    answer.get_by_role("button", name="Regenerate this answer").click()
    expect(answer.locator(".version-label")).to_have_text("2 / 2")
    answer.get_by_role("button", name="Previous version").click()
    expect(answer.locator(".version-label")).to_have_text("1 / 2")
    expect(answer.get_by_role("button", name="Previous version")).to_be_disabled()

    question = page.locator("article.message.user")
    question.get_by_role("button", name="Edit and send again").click()
    editor = page.get_by_role("textbox", name="Edit your message")
    expect(editor).to_be_focused()
    editor.fill("beta")
    editor.press("Enter")
    expect(page.locator("article.message.assistant .message-body")).to_have_text("beta")
    expect(question.locator(".version-label")).to_have_text("2 / 2")
    question.get_by_role("button", name="Previous version").click()
    expect(question.locator(".message-body")).to_have_text("alpha")
    expect(answer.locator(".version-label")).to_have_text("2 / 2")  # that branch, at its newest answer

    composer(page).fill("line one")
    composer(page).press("Shift+Enter")
    composer(page).type("line two")
    assert composer(page).input_value() == "line one\nline two"  # Shift+Enter adds a line


def test_attachments(page: Page, lumen: RunningLumen) -> None:
    log_in(page, lumen)
    expect(page.locator("#attach-limits")).to_contain_text("text up to 2 MB")
    page.locator("#file-input").set_input_files(
        [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"The secret number is 42.\n"}]
    )
    chip = page.locator("#attachment-list li")
    expect(chip).to_contain_text("notes.txt")
    answer = send(page, "What is the number?")
    expect(answer).to_contain_text("The secret number is 42.")
    expect(page.locator("article.message.user .message-attachments")).to_contain_text("notes.txt")
    expect(chip).to_have_count(0)  # sent with that message only

    page.locator("#file-input").set_input_files(
        [{"name": "dot.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\x00" * 32}]
    )
    expect(page.locator("#composer-error")).to_have_text(
        "echo does not take images. Choose a model that does, or attach text or a PDF."
    )


def test_acknowledge_inline_then_chat(page: Page, lumen: RunningLumen) -> None:
    log_in(page, lumen)
    page.get_by_label("Model").select_option("careful")
    notice = page.get_by_role("region", name=re.compile("Please read this notice"))
    expect(notice).to_be_visible()
    expect(notice.locator("strong")).to_have_text("research use")  # the notice's Markdown
    composer(page).fill("hello")
    composer(page).press("Enter")
    expect(page.locator("#composer-error")).to_contain_text("Acknowledge the model's notice")
    expect(page.get_by_role("button", name="Acknowledge")).to_be_focused()
    page.get_by_role("button", name="Acknowledge").click()
    expect(notice).to_be_hidden()
    expect(composer(page)).to_be_focused()
    composer(page).press("Enter")
    expect(page.locator("article.message.assistant .message-body")).to_have_text("hello")
    page.reload()
    expect(page.get_by_label("Model")).to_have_value("careful")
    expect(notice).to_be_hidden()  # remembered by the server


def test_refusals_in_plain_words(page: Page, lumen: RunningLumen) -> None:
    log_in(page, lumen)
    page.get_by_label("Model").select_option("pricey")
    composer(page).fill("an expensive question")
    composer(page).press("Enter")
    error = page.locator(".message-error")
    expect(error).to_contain_text("You are out of coins for now.")
    expect(page.locator("article.message.user .message-body")).to_have_text("an expensive question")
    expect(composer(page)).to_have_value("")  # kept in the conversation, not lost

    page.get_by_label("Model").select_option("down")
    error.get_by_role("button", name="Try again").click()
    expect(page.locator(".message-error")).to_contain_text("The model is not answering right now")
    page.get_by_label("Model").select_option("echo")
    page.locator(".message-error").get_by_role("button", name="Try again").click()
    expect(page.locator("article.message.assistant .message-body")).to_have_text("an expensive question")
    expect(page.locator(".message-error")).to_have_count(0)


def test_hostile_model_output_runs_no_script(page: Page, lumen: RunningLumen, console: Console) -> None:
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    log_in(page, lumen)
    answer = send(page, HOSTILE)
    body = answer.locator(".message-body")
    expect(body).to_contain_text("window.pwned")  # shown as text
    for selector in (
        "script",
        "img",
        "iframe",
        "svg",
        "style",
        "details",
        "[onerror]",
        "[onload]",
        "[ontoggle]",
    ):
        expect(body.locator(selector)).to_have_count(0)
    hrefs = body.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://evil.example/pixel.png", "https://example.edu/page"], hrefs
    for link in body.locator("a").all():
        expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(body.get_by_text("md link")).to_have_count(1)
    body.get_by_text("md link").click()  # plain text, not a link
    page.reload()
    page.locator("article.message.assistant").wait_for()
    assert page.evaluate("() => window.pwned") is None
    assert dialogs == []
    assert not [url for url in requests if "evil.example" in url]
    assert console.messages == [], console.messages  # no error, and no CSP violation report


def test_conversation_list(page: Page, lumen: RunningLumen) -> None:
    user_id = log_in(page, lumen)

    async def seed() -> None:
        for i in range(60):
            conversation = await store.create_conversation(
                engine=lumen.state.engine, owner_id=user_id, title=f"Topic {i}", model="echo"
            )
            if i == 7:
                await store.append_message(
                    engine=lumen.state.engine,
                    owner_id=user_id,
                    conversation_id=conversation.id,
                    message=NewMessage(role="user", content="Where is the needle in the haystack?"),
                )

    lumen.run(seed())
    page.reload()
    items = page.locator("#conversation-list > li")
    expect(items).to_have_count(50)  # one page; the rest loads as the list scrolls
    page.get_by_role("button", name="Load more").scroll_into_view_if_needed()
    expect(items).to_have_count(60)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    page.get_by_label("Search conversations").fill("needle")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Topic 7")
    expect(items.first.locator(".conversation-snippet")).to_contain_text("needle in the haystack")
    items.first.locator(".conversation-link").click()
    expect(page.locator("#chat-title")).to_have_text("Topic 7")
    expect(page.locator("article.message.user")).to_have_text(re.compile("Where is the needle"))

    items.first.locator("summary").click()
    items.first.get_by_role("button", name="Rename").click()
    rename = page.get_by_role("textbox", name="New name for Topic 7")
    rename.fill("Haystack search")
    rename.press("Enter")
    expect(page.locator("#chat-title")).to_have_text("Haystack search")
    expect(items.first.locator(".conversation-title")).to_have_text("Haystack search")

    items.first.locator("summary").click()
    export = items.first.get_by_role("link", name="Export as Markdown")
    with page.expect_download() as download:
        export.click()
    assert download.value.suggested_filename == "Haystack search.md"

    items.first.locator("summary").click()
    items.first.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete this conversation?")
    expect(dialog).to_contain_text("Haystack search")
    dialog.get_by_role("button", name="Delete").click()
    expect(items).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("New chat")  # the open one was deleted
    page.get_by_label("Search conversations").fill("")
    expect(items).to_have_count(50)


def test_accessible_in_light_dark_and_on_a_phone(browser: Browser, lumen: RunningLumen) -> None:
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport=DESKTOP, color_scheme=scheme)  # type: ignore[arg-type]
        try:
            page = context.new_page()
            log_in(page, lumen)
            send(page, RICH)
            page.get_by_label("Model").select_option("careful")  # the notice is on the page too
            assert_accessible(page)
            if scheme == "dark":
                screenshot(page, "chat-dark")  # the light one is test_send_stream_and_render's
        finally:
            context.close()

    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)  # type: ignore[arg-type]
    try:
        page = phone.new_page()
        log_in(page, lumen)
        send(page, RICH)
        sidebar = page.locator("#chat-sidebar")
        expect(sidebar).to_be_hidden()  # behind the Conversations button
        overflow = page.evaluate("() => document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        assert_accessible(page)
        screenshot(page, "chat-phone")
        toggle = page.get_by_role("button", name="Conversations")
        expect(toggle).to_have_attribute("aria-expanded", "false")
        toggle.click()
        expect(sidebar).to_be_visible()
        expect(page.get_by_label("Search conversations")).to_be_focused()
        assert_accessible(page)
        page.keyboard.press("Escape")
        expect(sidebar).to_be_hidden()
        expect(toggle).to_be_focused()
    finally:
        phone.close()
