"""chatd: a dense, durable chat server on Trio, wsproto and LMDB."""

__version__ = "0.1.0"
