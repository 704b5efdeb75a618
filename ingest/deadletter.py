"""Where refused data goes, with the reason.

- Lines the database refused (HTTP 400/422) go to a local dead-letter file,
  one JSON object per line with the server's reason, so they can be fixed and
  written again by hand.
- Messages that do not decode, carry a value of the wrong type or a
  timestamp far from now are published as a `dead_letter` on the lane's
  `deadletter` topic (orelane.contract.messages.DeadLetter).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

REASON_LIMIT = 1000  # characters of a reason kept; servers can answer with the whole batch


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """A reason as one line: newlines would break the log, the line protocol and the dead-letter file."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class DeadLetterFile:
    """Append-only JSON lines, each on disk (fsync) before `write` returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.entries = 0

    def write(self, entries: list[dict]) -> None:
        if not entries:
            return
        text = "".join(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n" for entry in entries)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                data = text.encode("utf-8")
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
            self.entries += len(entries)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
