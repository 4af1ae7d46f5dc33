"""How long work reports its progress: phases with a total, advanced as work is done (any thread)."""

from __future__ import annotations


class Reporter:
    """Receives progress; this base ignores it (scheduled backups), the CLI draws bars."""

    def phase(self, description: str, total: float | None = None) -> None:
        """A new phase of the work begins; `total` in its own unit (rows, bytes), None when unknown."""

    def advance(self, amount: float) -> None:
        """`amount` more of the current phase is done."""
