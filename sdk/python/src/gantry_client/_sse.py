"""A Server-Sent Events parser: feed it lines, take complete events."""

from __future__ import annotations

from typing import Optional

from ._models import Event


class SseParser:
    def __init__(self) -> None:
        self._event: str = "message"
        self._id: Optional[str] = None
        self._data: list[str] = []
        self._any = False
        self.last_id: Optional[str] = None

    def feed(self, line: str) -> Optional[Event]:
        """One line (without its end); returns the event a blank line completes."""
        line = line.rstrip("\r")
        if line == "":
            if not self._any:
                return None
            ev = Event(event=self._event, data="\n".join(self._data), id=self._id)
            if self._id is not None:
                self.last_id = self._id
            self._event, self._id, self._data, self._any = "message", None, [], False
            return ev
        if line.startswith(":"):
            return None  # a comment: keep-alive
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        self._any = True
        if key == "event":
            self._event = value
        elif key == "id":
            self._id = value
        elif key == "data":
            self._data.append(value)
        return None
