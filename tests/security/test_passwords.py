"""Passwords: old hashes are upgraded at login; a login flood is refused with 503 and
Retry-After once the hash queue is full, and chat goes on meanwhile."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from chatd.client import ChatClient, HttpClient
from tests.conftest import PASSWORD, make_config, make_user, running

OLD = {"argon2_memory_kib": 7168, "argon2_time_cost": 5}  # OWASP's other end, still allowed


async def test_an_old_hash_is_upgraded_at_login(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(make_config(data, security=OLD)) as server:
        await ChatClient(server.url, "alice", PASSWORD).signup()
        old = server.app.store.account("alice")["pw"]
        assert old.startswith("$argon2id$v=19$m=7168,t=5,p=1$")
    async with running(make_config(data)) as server:
        wrong = ChatClient(server.url, "alice", PASSWORD + "x")
        async with HttpClient(server.url) as http:
            body = {"user_id": "alice", "password": wrong.password}
            assert (await http.request("POST", "/v1/login", body)).status == 401
        assert server.app.store.account("alice")["pw"] == old  # only a proven password
        alice = ChatClient(server.url, "alice", PASSWORD)
        await alice.login()
        new = server.app.store.account("alice")["pw"]
        assert new.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and new != old
        assert not server.app.accounts.hasher.check_needs_rehash(new)
        await alice.login()  # and the new hash verifies
        assert server.app.store.account("alice")["pw"] == new


async def test_a_login_flood_is_refused_and_chat_goes_on(tmp_path: Path) -> None:
    # One slow hash at a time, four in all: most of a burst of 16 is refused, and the four
    # take long enough (20 passes each) that the chat below is done while they still run.
    security = {"argon2_time_cost": 20, "hash_threads": 1, "max_pending_hashes": 4}
    async with running(make_config(tmp_path / "data", security=security)) as server:
        alice, bob = await make_user(server, "alice"), await make_user(server, "bob")
        statuses: list[tuple[int, str | None, dict[str, object]]] = []
        chat_done_with_logins_in_flight: list[bool] = []
        in_flight = 0

        async def login(i: int) -> None:
            nonlocal in_flight
            in_flight += 1
            async with HttpClient(server.url) as http:
                body = {"user_id": f"nobody{i}", "password": "wrong password"}
                res = await http.request("POST", "/v1/login", body)
            in_flight -= 1
            statuses.append((res.status, res.headers.get("retry-after"), res.json()))

        async with alice.session() as a, bob.session() as b:
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(login, i)
                await trio.testing.wait_all_tasks_blocked()
                for n in range(20):
                    ack = await a.send(to="bob", body=f"m{n}")
                    with trio.fail_after(10):
                        while (await b.next_frame())["type"] != "msg":
                            pass
                    assert ack["msg_id"] == n + 1
                chat_done_with_logins_in_flight.append(in_flight > 0)
        assert chat_done_with_logins_in_flight == [True]
        refused = [s for s in statuses if s[0] == 503]
        assert len(refused) >= 16 - 4 and all(s[0] in (401, 503) for s in statuses)
        for _, retry_after, body in refused:
            assert retry_after == "1" and body["error"] == "unavailable"
            assert body["retry_after"] == 1000
