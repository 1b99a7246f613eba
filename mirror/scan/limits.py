"""What one scan may cost: per-file CPU, wall clock and memory, and the caps on archive contents.

The defaults come from security.md §3.4 (a benign 100 000-tensor checkpoint walks in a few seconds;
hostile inputs are made to cost more) and §7.4 (zip bombs). Hitting any of them blocks the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GiB = 1 << 30


@dataclass(frozen=True)
class ScanLimits:
    """Per-file limits of the scan child; ``archive_*`` cap what one archive may expand to."""

    cpu_seconds: float = 60.0
    wall_seconds: float = 120.0
    memory_bytes: int = 2 * GiB
    archive_max_members: int = 200_000
    archive_max_bytes: int = 64 * GiB  # total uncompressed size of one archive's members
    archive_max_ratio: int = 1000  # uncompressed : compressed, for members over 1 MiB

    def __post_init__(self) -> None:
        if self.cpu_seconds <= 0 or self.wall_seconds <= 0 or self.memory_bytes <= 0:
            raise ValueError("scan limits must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScanLimits":
        return cls(**d)
