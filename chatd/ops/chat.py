"""Talking to a server from a terminal or a script, on the client library (chatd/client/).

``chatd chat``: line-based and interactive. Incoming messages, presence, typing and read
marks are printed as they come; a line is a command or, without one, a message to the
current conversation (the last ``/to`` or ``/group``):

    /to bob hi there         send to bob (and talk to bob from now on)
    /group new NAME a b c    create a group with a, b and c; talk to it from now on
    /group g:ID hello        send to a group (and talk to it from now on)
    /history [bob|g:ID]      the last page of a conversation (default: the current one)
    /channels                your conversations, most recent first, with unread counts
    /friend bob              ask bob to be friends (friends see each other's presence)
    /typing                  tell the current conversation you are typing
    /help, /quit

``chatd send`` sends one message and prints its ack; ``chatd listen`` prints every frame
as one JSON line (``msg``, ``presence``, ``typing``, ``read``, ``synced``), for scripts.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import trio

from chatd.client import ChatClient, ChatError, HttpError, Session

HELP = __doc__.split("\n\n")[1] if __doc__ else ""


def dm_channel(a: str, b: str) -> str:
    x, y = sorted((a, b))
    return f"dm:{x}:{y}"


def show(frame: dict[str, Any], me: str) -> str | None:
    """A server frame as a terminal line (None: nothing to show)."""
    kind = frame.get("type")
    if kind == "msg":
        stamp = time.strftime("%H:%M:%S", time.localtime(frame["ts"] / 1000))
        where = "" if frame["channel"].startswith("dm:") else f" [{frame['channel']}]"
        return f"{stamp}{where} <{frame['from']}> {frame['body']}"
    if kind == "presence":
        return f"* {frame['user_id']} is {frame['status']}"
    if kind == "typing":
        return f"* {frame['user_id']} is typing in {frame['channel']}"
    if kind == "read":
        return f"* {frame['user_id']} read {frame['channel']} up to {frame['msg_id']}"
    return None


class Chat:
    """The interactive client's state: who we talk to, and the commands."""

    def __init__(self, client: ChatClient, session: Session, out: Callable[[str], None]) -> None:
        self.client = client
        self.session = session
        self.out = out
        self.target: tuple[str, str] | None = None  # ("to", user) or ("channel", id)

    def channel(self) -> str | None:
        if self.target is None:
            return None
        kind, name = self.target
        return dm_channel(self.client.user_id, name) if kind == "to" else name

    async def line(self, line: str) -> bool:
        """Run one input line; False once the user quits."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            if self.target is None:
                self.out("! no conversation yet: /to USER TEXT or /group g:ID TEXT")
                return True
            await self._send(line)
            return True
        cmd, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            return await self._command(cmd, rest)
        except (ChatError, HttpError) as exc:
            self.out(f"! {exc}")
        except ValueError as exc:
            self.out(f"! {exc}")
        return True

    async def _command(self, cmd: str, rest: str) -> bool:
        if cmd in ("/quit", "/exit"):
            return False
        if cmd == "/help":
            self.out(HELP)
        elif cmd == "/to":
            user, _, text = rest.partition(" ")
            if not user:
                raise ValueError("usage: /to USER [TEXT]")
            self.target = ("to", user)
            if text.strip():
                await self._send(text.strip())
        elif cmd == "/group":
            await self._group(rest)
        elif cmd == "/history":
            channel = self._named(rest) if rest else self.channel()
            if channel is None:
                raise ValueError("usage: /history [USER|g:ID]")
            for m in await self.session.history(channel):
                self.out(show({"type": "msg", **m}, self.client.user_id) or "")
        elif cmd == "/channels":
            async with self.client.http() as http:
                rows = (await http.call("GET", "/v1/channels"))["channels"]
            for row in rows:
                self.out(f"{row['channel_id']}  {row.get('name') or ''}  unread {row['unread']}")
        elif cmd == "/friend":
            async with self.client.http() as http:
                answer = await http.call("PUT", f"/v1/friends/{rest}")
            self.out(f"* {answer['user_id']}: {answer['state']}")
        elif cmd == "/typing":
            channel = self.channel()
            if channel is not None:
                await self.session.send_frame({"type": "typing", "channel": channel})
        else:
            self.out(f"! unknown command {cmd}: /help lists them")
        return True

    def _named(self, name: str) -> str:
        return name if name.startswith(("g:", "dm:")) else dm_channel(self.client.user_id, name)

    async def _group(self, rest: str) -> None:
        words = shlex.split(rest)
        if len(words) >= 2 and words[0] == "new":
            async with self.client.http() as http:
                group = await http.call(
                    "POST", "/v1/groups", {"name": words[1], "members": words[2:]}
                )
            self.target = ("channel", group["channel_id"])
            self.out(f"* group {group['name']} is {group['channel_id']}: {group['members']}")
            return
        channel, _, text = rest.partition(" ")
        if not channel.startswith("g:"):
            raise ValueError("usage: /group new NAME USER... | /group g:ID [TEXT]")
        self.target = ("channel", channel)
        if text.strip():
            await self._send(text.strip())

    async def _send(self, text: str) -> None:
        assert self.target is not None
        kind, name = self.target
        if kind == "to":
            ack = await self.session.send(to=name, body=text)
        else:
            ack = await self.session.send(channel=name, body=text)
        self.out(f"  (sent #{ack['msg_id']} in {ack['channel']})")


async def _read_lines(stdin: TextIO, send: trio.MemorySendChannel[str]) -> None:
    async with send:
        while True:
            line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
            if not line:
                return
            await send.send(line)


async def chat(client: ChatClient, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """The interactive client until /quit or end of input."""

    def out(text: str) -> None:
        print(text, file=stdout, flush=True)

    await client.login()
    async with client.session() as session, trio.open_nursery() as nursery:
        out(f"* {client.user_id} connected to {client.base_url} (/help for commands)")
        ui = Chat(client, session, out)

        async def incoming() -> None:
            while True:
                try:
                    frame = await session.next_frame()
                except trio.EndOfChannel:
                    out("* disconnected")
                    nursery.cancel_scope.cancel()
                    return
                text = show(frame, client.user_id)
                if text:
                    out(text)

        nursery.start_soon(incoming)
        send, recv = trio.open_memory_channel[str](16)
        nursery.start_soon(_read_lines, stdin, send)
        async for line in recv:
            if not await ui.line(line):
                break
        nursery.cancel_scope.cancel()


async def send_one(
    client: ChatClient, to: str | None, channel: str | None, body: str
) -> dict[str, Any]:
    await client.login()
    async with client.session(heartbeat=None, reconnect=False) as session:
        return await session.send(to=to, channel=channel, body=body)


async def listen(
    client: ChatClient, since: int | None, count: int | None, stdout: TextIO = sys.stdout
) -> None:
    """Print every frame as a JSON line; stop after ``count`` msg frames if given."""
    await client.login()
    async with client.session(since=since) as session:
        seen = 0
        while count is None or seen < count:
            try:
                frame = await session.next_frame()
            except trio.EndOfChannel:
                return
            print(json.dumps(frame, ensure_ascii=False), file=stdout, flush=True)
            if frame.get("type") == "msg":
                seen += 1
