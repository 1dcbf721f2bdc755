"""The web client end to end in headless Chromium (Debian's ``chromium``, driven by Playwright
with ``executable_path``; no browser download): three users sign up, befriend, chat 1:1 with
typing and read receipts, make a group (one of them on a phone-sized screen), page back
through history, and keep going across a server restart.

Screenshots of the main views go to the test's tmp dir; with ``CHATD_SCREENSHOTS=DIR`` set
they are copied there too (``CHATD_SCREENSHOTS=docs/screenshots`` refreshes the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from chatd.client import ChatClient
from tests.web.chatd_process import ChatdProcess

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on PATH: apt-get install -y chromium (scripts/test does it as root)",
        allow_module_level=True,
    )
expect = sync_api.expect
Page = Any  # playwright's Page; kept loose so mypy need not know playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1100, "height": 720}
PHONE = {"width": 390, "height": 780}
PASSWORD = "correct horse battery"
WAIT_MS = 10_000


@pytest.fixture
def chatd(tmp_path: Path) -> Iterator[ChatdProcess]:
    server = ChatdProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Screenshots into the tmp dir, copied to ``$CHATD_SCREENSHOTS`` when it is set."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir()
        self.copy_to = os.environ.get("CHATD_SCREENSHOTS")

    def take(self, page: Page, name: str) -> None:
        path = self.dir / f"{name}.png"
        page.screenshot(path=str(path))
        if self.copy_to:
            Path(self.copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(self.copy_to) / path.name)


def open_page(
    browser: Any, url: str, viewport: dict[str, int], problems: list[str], urls: list[str]
) -> Page:
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    context.set_default_timeout(WAIT_MS)
    context.on("request", lambda request: urls.append(request.url))
    page = context.new_page()

    def on_console(msg: Any) -> None:
        if "Content Security Policy" in msg.text or msg.type == "error" and "Uncaught" in msg.text:
            problems.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.goto(url)
    return page


def sign_up(page: Page, user_id: str, display_name: str) -> None:
    form = page.get_by_role("main")
    form.get_by_label("User id").fill(user_id)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_label("Display name").fill(display_name)
    form.get_by_role("button", name="Sign up").click()
    expect(page.locator("#conn-state")).to_have_text("Online")


def friend_row(page: Page, user_id: str) -> Any:
    return page.locator(f'#friend-list li[data-user="{user_id}"]')


def channel_button(page: Page, name: str) -> Any:
    return page.locator("#channel-list button", has_text=name)


def unread(page: Page, channel: str, count: int) -> Any:
    return channel_button(page, channel).get_by_text(f"{count} unread", exact=True)


def messages(page: Page) -> Any:
    return page.get_by_role("log", name="Messages")


def send(page: Page, body: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(body)
    box.press("Enter")


async def as_user(url: str, user_id: str, channel: str, bodies: list[str]) -> None:
    """Another device of ``user_id`` (the Python client) sends ``bodies`` to ``channel``."""
    client = ChatClient(url, user_id, PASSWORD)
    async with client.session(reconnect=False) as session:
        for body in bodies:
            await session.send(channel=channel, body=body)


def test_three_users_chat_and_survive_a_restart(
    chatd: ChatdProcess, browser: Any, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    problems: list[str] = []
    urls: list[str] = []
    alice = open_page(browser, chatd.url, DESKTOP, problems, urls)
    bob = open_page(browser, chatd.url, DESKTOP, problems, urls)
    carol = open_page(browser, chatd.url, PHONE, problems, urls)
    expect(alice.get_by_role("button", name="Log in")).to_be_visible()
    shots.take(alice, "login")

    # By keyboard: Enter in the password field logs in (the form's first button); no account.
    carol.get_by_role("main").get_by_label("User id").fill("carol")
    carol.get_by_role("main").get_by_label("Password").fill(PASSWORD)
    carol.get_by_role("main").get_by_label("Password").press("Enter")
    expect(carol.get_by_role("alert").first).to_have_text("Wrong user id or password.")

    sign_up(alice, "alice", "Alice")
    sign_up(bob, "bob", "Bob")
    sign_up(carol, "carol", "Carol")

    # Friends: alice asks, bob sees the request (after a refresh) and accepts it.
    alice.get_by_label("Add a friend by user id").fill("bob")
    alice.get_by_role("button", name="Add", exact=True).click()
    expect(friend_row(alice, "bob")).to_contain_text("request sent")
    bob.get_by_role("button", name="Refresh friends").click()
    expect(friend_row(bob, "alice")).to_contain_text("wants to be friends")
    shots.take(bob, "friend-request")
    bob.get_by_role("button", name="Accept alice").click()
    expect(friend_row(bob, "alice").locator(".dot.online")).to_be_visible()
    alice.get_by_role("button", name="Refresh friends").click()
    expect(alice.get_by_role("button", name="Chat with bob, online")).to_be_visible()

    # 1:1: the message, an unread count, a read receipt, typing, the reply.
    alice.get_by_role("button", name="Chat with bob, online").click()
    expect(alice.locator("#conv-title")).to_have_text("bob")
    send(alice, "Hi Bob! Lunch at noon?")
    expect(messages(alice).locator(".msg.mine").last).to_contain_text("Sent")
    expect(unread(bob, "Alice", 1)).to_be_visible()
    channel_button(bob, "Alice").click()
    expect(messages(bob)).to_contain_text("Hi Bob! Lunch at noon?")
    expect(messages(alice).locator(".receipt.seen")).to_have_text("Seen")
    bob.get_by_label("Message", exact=True).press_sequentially("Sure", delay=30)
    expect(alice.locator("#typing")).to_have_text("bob is typing…")
    shots.take(alice, "chat-typing")
    bob.get_by_label("Message", exact=True).press("Enter")
    expect(messages(alice)).to_contain_text("Sure")
    expect(alice.locator("#typing")).to_have_text("")

    # A group with a third user who is nobody's friend, on a phone-sized screen.
    alice.locator("#new-group summary").click()
    alice.get_by_label("Group name").fill("Weekend plans")
    alice.get_by_role("checkbox", name="bob").check()
    alice.get_by_label("Other members").fill("carol")
    alice.get_by_role("button", name="Create group").click()
    expect(alice.locator("#conv-title")).to_have_text("Weekend plans")
    expect(alice.locator("#conv-sub")).to_contain_text("3 members")
    send(alice, "Hiking on Saturday?")
    expect(unread(carol, "Weekend plans", 1)).to_be_visible()
    expect(carol.locator("#conversation")).to_be_hidden()  # phone: the list alone
    channel_button(carol, "Weekend plans").click()
    expect(carol.locator("#sidebar")).to_be_hidden()  # phone: the conversation alone
    expect(messages(carol)).to_contain_text("Hiking on Saturday?")
    send(carol, "Count me in")
    expect(messages(alice)).to_contain_text("Count me in")
    channel_button(bob, "Weekend plans").click()
    expect(messages(bob)).to_contain_text("Count me in")
    expect(messages(alice).locator(".receipt.seen").last).to_contain_text("Seen by")
    shots.take(carol, "group-phone")
    shots.take(alice, "group-desktop")

    # History: 40 more from carol's other device; bob's page pages back to the first one.
    group_id = alice.locator("#channel-list button[aria-current=true]").get_attribute(
        "data-channel"
    )
    assert group_id and group_id.startswith("g:")
    trio.run(as_user, chatd.url, "carol", group_id, [f"note {i}" for i in range(40)])
    expect(messages(bob)).to_contain_text("note 39")
    bob.reload()  # same tab: the session survives in sessionStorage, the page reloads history
    expect(bob.locator("#conn-state")).to_have_text("Online")
    channel_button(bob, "Weekend plans").click()
    expect(messages(bob)).to_contain_text("note 39")
    expect(messages(bob)).not_to_contain_text("Hiking on Saturday?")
    expect(bob.get_by_role("button", name="Load older messages")).to_be_visible()
    bob.get_by_role("button", name="Load older messages").click()
    expect(messages(bob)).to_contain_text("Hiking on Saturday?")
    expect(bob.get_by_role("button", name="Load older messages")).to_be_hidden()

    # Restart: the pages see the server go, alice writes meanwhile, carol's other device
    # sends once it is back; every page reconnects (`since`) and shows it all.
    carol.get_by_role("button", name="Back to conversations").click()
    expect(carol.locator("#sidebar")).to_be_visible()
    assert chatd.stop() == 0
    expect(alice.locator("#conn-state")).to_contain_text("Reconnecting")
    send(alice, "Written while the server was down")
    expect(messages(alice).locator(".msg.pending")).to_contain_text("Sending…")
    shots.take(alice, "reconnecting")
    chatd.start()
    trio.run(as_user, chatd.url, "carol", group_id, ["Back after the restart"])
    for page in (alice, bob):
        expect(page.locator("#conn-state")).to_have_text("Online", timeout=20_000)
        expect(messages(page)).to_contain_text("Back after the restart")
        expect(messages(page)).to_contain_text("Written while the server was down")
    expect(messages(alice).locator(".msg.pending")).to_have_count(0)
    expect(carol.locator("#conn-state")).to_have_text("Online", timeout=20_000)
    cursor = bob.evaluate("() => Number(localStorage.getItem('chatd.cursor.bob'))")
    assert cursor > 40

    # The token lives in sessionStorage only: never in a URL the pages asked for.
    token = alice.evaluate("() => JSON.parse(sessionStorage.getItem('chatd.session')).token")
    secret = token.partition(".")[2]
    assert secret and not [u for u in urls if secret in u]
    alice.get_by_role("button", name="Log out").click()
    expect(alice.get_by_role("button", name="Log in")).to_be_visible()
    assert alice.evaluate("() => sessionStorage.getItem('chatd.session')") is None
    assert problems == []
