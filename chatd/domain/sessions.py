"""The in-memory session table: user_id -> that user's online devices (:class:`DeviceSink`)."""

from __future__ import annotations

from collections.abc import Iterator

from chatd.domain.ports import DeviceSink


class Sessions:
    def __init__(self) -> None:
        self._by_user: dict[str, list[DeviceSink]] = {}

    def add(self, device: DeviceSink) -> None:
        self._by_user.setdefault(device.user_id, []).append(device)

    def remove(self, device: DeviceSink) -> None:
        devices = self._by_user.get(device.user_id)
        if devices is None or device not in devices:
            return
        devices.remove(device)
        if not devices:
            del self._by_user[device.user_id]

    def devices(self, user_id: str) -> list[DeviceSink]:
        return self._by_user.get(user_id, [])

    def count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def revoke(self, user_id: str, token_digest: bytes) -> None:
        """Sign out every device of ``user_id`` that authenticated with this token."""
        for device in list(self.devices(user_id)):
            if device.token_digest == token_digest:
                device.end("unauthorized", "token revoked")

    def users(self) -> int:
        return len(self._by_user)

    def __iter__(self) -> Iterator[DeviceSink]:
        for devices in self._by_user.values():
            yield from devices
