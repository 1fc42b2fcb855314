"""Peak-memory helpers the benchmarks share: reset a process's peak RSS, read its current and peak RSS."""

from __future__ import annotations

from pathlib import Path


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: clear_refs 5), so VmHWM then measures what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MiB."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(f"{field}:")), None)
