"""The agent's durable state on /persist: the write marker, the staged image, the last error.

Safety rule 7 (restart at any instant, resume from disk): before the inactive partition is
touched, ``writing`` is recorded and that slot is marked ``dirty``; only a verified image clears
``dirty`` and sets ``staged``. A restart that finds ``writing`` knows a write was cut short:
it cleans up and reports it, and the dirty slot can never be switched to until a new
``prepare_upgrade`` succeeds. The file is replaced atomically (temp, fsync, rename).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from kubeos.agent.settings.atomic import atomic_write


class AgentState:
    """Thread-safe accessor of ``state.json``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "state.json"
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self._data = loaded
        except (OSError, ValueError):
            pass

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(self._data, indent=1, sort_keys=True).encode()
        atomic_write(self.path, data, mode=0o600)

    def get(self, key: str) -> Any:
        with self._lock:
            return self._data.get(key)

    def update(self, **values: Any) -> None:
        """Set keys (None deletes) and persist before returning."""
        with self._lock:
            for key, value in values.items():
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value
            self._save()

    def record_error(self, message: str) -> None:
        self.update(last_error={"message": message, "time": time.time()})

    @property
    def last_error(self) -> str | None:
        err = self.get("last_error")
        return str(err["message"]) if isinstance(err, dict) and "message" in err else None
