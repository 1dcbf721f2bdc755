"""Running chatd as a service: systemd notification, drain, logs, metrics counters, the admin
socket and the operator commands (docs/operations.md)."""
