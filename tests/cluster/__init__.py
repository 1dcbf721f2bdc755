"""Tests of the cluster: discovery, routing, the broker and the local launcher."""
