"""chatd's load-test harness: ``python -m bench SCENARIO`` (see bench/README.md)."""
