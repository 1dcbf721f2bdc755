"""The typed repository: record operations over one LMDB transaction.

:class:`ReadTx` reads, :class:`WriteTx` also writes. Each sub-database has a small set of typed
get / put / delete / scan methods (named ``<record>_<verb>``), defined next to its encoding in
``storage/accounts.py``, ``messages.py``, ``groups.py``, ``outbox.py`` and ``push.py``. There
is no rule about what a chat user may do here: a caller (the domain) writes a *transaction
function* ``fn(tx: WriteTx) -> result`` that reads, decides and writes, and hands it to
:meth:`storage.Store.write` or :meth:`storage.Store.submit`, which run it inside a group-commit
batch (see ``storage/committer.py``). An exception raised by ``fn`` rolls back everything it
wrote and is handed back to its caller; the other functions of the batch still commit.

A ``WriteTx`` is valid only during its function's call, in the writer thread: keep no
reference to it, do no I/O and touch no shared mutable state from it. A function may run more
than once before its batch commits (the batch is run again when another op in it raises, or
when the map must grow); only the last run's writes and result count.
"""

from __future__ import annotations

from storage.accounts import AccountReads, AccountWrites
from storage.env import Txn
from storage.groups import GroupReads, GroupWrites
from storage.messages import MessageReads, MessageWrites
from storage.outbox import OutboxReads, OutboxWrites
from storage.push import PushReads, PushWrites
from storage.relay import RelayReads, RelayWrites


class ReadTx(AccountReads, GroupReads, MessageReads, OutboxReads, PushReads, RelayReads):
    """Typed reads of one transaction (read-only or write)."""

    __slots__ = ("txn",)

    def __init__(self, txn: Txn) -> None:
        self.txn = txn


class WriteTx(
    AccountWrites, GroupWrites, MessageWrites, OutboxWrites, PushWrites, RelayWrites, ReadTx
):
    """Typed reads and writes of the write transaction an op runs in (its batch's)."""

    __slots__ = ()
