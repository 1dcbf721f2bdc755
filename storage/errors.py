"""Errors raised by the storage layer."""


class StorageError(Exception):
    """Base class for storage failures."""


class Conflict(StorageError):
    """A record that must be new already exists (e.g. a taken user_id)."""


class StorageUnavailable(StorageError):
    """The database cannot take writes: disk full, map at its configured maximum, I/O error.

    Nothing committed before is lost; the write that raised this was not applied.
    """
