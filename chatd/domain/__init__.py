"""The domain: accounts, messaging and sync, groups, presence, receipts. No sockets, no HTTP."""
