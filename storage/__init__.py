"""The LMDB storage layer: the only code in chatd that touches LMDB.

:class:`Store` is the typed API the server calls. Reads run inline on the event loop (LMDB
reads are memory-mapped B-tree lookups of a few microseconds); writes go through the group
committer, which batches many callers' operations into one synced transaction run in a worker
thread. See ``storage/committer.py`` for the strategy.
"""

from storage.errors import Conflict, StorageError, StorageUnavailable
from storage.store import Store

__all__ = ["Conflict", "StorageError", "StorageUnavailable", "Store"]
