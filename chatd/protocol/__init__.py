"""The sans-IO protocol core: frame codecs and client-frame validation. No trio, no sockets."""
