"""The error of a bad setting, shared by the config (``chatd/config.py``) and the discovery
file (``chatd/discovery.py``) so that neither imports the other at load time."""


class ConfigError(ValueError):
    """A config key is unknown or its value is invalid; the message names the key."""
