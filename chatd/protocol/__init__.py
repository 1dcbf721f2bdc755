"""The sans-IO protocol core: the frame codec (``frames``), the per-device session state
machine (``session``) and their errors (``errors``). No trio, no sockets, no clock."""
