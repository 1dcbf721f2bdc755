"""ClusterRouter: the domain's Router (chatd/domain/ports.py) for a cluster of shards.

The rule, the same for users and channels:

- a user's **home** (account, inbox, sessions) is the shard that wins the rendezvous hash of the
  user_id over the shard names listed in the discovery file;
- a channel's **sequencer** (the shard that assigns its msg_ids and keeps its history) is the
  shard that wins the rendezvous hash of the channel id, with the same function.

The function (:mod:`chatd.discovery`) depends only on the names and the key, so every
shard agrees without talking, and adding an N-th shard moves about 1/N of the keys, all to
the new shard.
"""

from __future__ import annotations

from chatd.discovery import Discovery
from chatd.domain.ports import Place


class ClusterRouter:
    """Where users and channels live, seen from the shard called ``here``."""

    def __init__(self, discovery: Discovery, here: str) -> None:
        discovery.shard(here)  # DiscoveryError naming ``here`` if the file does not list it
        self.discovery = discovery
        self._here = here
        # One Place per shard, made once: home() and sequencer() run per message.
        self._places = {
            shard.name: Place(local=shard.name == here, shard=shard.name, url=shard.ws_url)
            for shard in discovery.shards
        }

    @property
    def here(self) -> str:
        """This shard's name."""
        return self._here

    def home(self, user_id: str) -> Place:
        """The shard that holds the user's account, inbox and sessions."""
        return self._places[self.discovery.home(user_id).name]

    def sequencer(self, channel: str) -> Place:
        """The shard that assigns the channel's msg_ids and keeps its history."""
        return self._places[self.discovery.home(channel).name]

    def shards(self) -> list[str]:
        """The names of the other shards, in the discovery file's order."""
        return [shard.name for shard in self.discovery.shards if shard.name != self._here]

    def peer(self, name: str) -> tuple[str, int]:
        """(host, port) where shard ``name`` accepts peer connections."""
        shard = self.discovery.shard(name)
        return shard.peer_host, shard.peer_port
