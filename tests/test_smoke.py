from chatd.client import HttpClient
from chatd.server import Server
from tests.conftest import make_user


async def test_signup_login_send(server: Server, http: HttpClient) -> None:
    alice = await make_user(server, "alice")
    bob = await make_user(server, "bob")
    async with alice.session() as a, bob.session() as b:
        ack = await a.send(to="bob", body="hello")
        assert ack["msg_id"] == 1 and ack["channel"] == "dm:alice:bob"
        msg = await b.next_frame()
        assert msg["type"] == "msg" and msg["body"] == "hello" and msg["inbox"] == 1
    assert (await http.request("GET", "/healthz")).status == 200
