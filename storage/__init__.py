"""The LMDB storage layer: the only code in chatd that touches LMDB.

:class:`Store` is the API the server calls. Reads run inline on the event loop (LMDB reads are
memory-mapped B-tree lookups of a few microseconds); a write is a transaction function over a
typed :class:`~storage.repo.WriteTx`, run by the group committer, which batches many callers'
functions into one synced transaction in a worker thread (see ``storage/committer.py``). The
repository holds records, not rules: what a user may do is decided by the caller's function.
"""

from storage.errors import Conflict, StorageError, StorageUnavailable
from storage.records import (
    ChannelPage,
    ChannelState,
    Group,
    InboxEntry,
    InboxPage,
    Membership,
    Message,
)
from storage.repo import ReadTx, WriteTx
from storage.store import Store, message_bytes

__all__ = [
    "ChannelPage",
    "ChannelState",
    "Conflict",
    "Group",
    "InboxEntry",
    "InboxPage",
    "Membership",
    "Message",
    "ReadTx",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "WriteTx",
    "message_bytes",
]
