"""Progress that works in a terminal and in a log: rich's bar when stderr is a terminal, else a plain line
every N items or S seconds (a 23-minute run written to a file must not stay silent until the end)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from kelocate.commands.common import err_console

Advance = Callable[[int, str], None]  # (items done, what is being done now)


@contextlib.contextmanager
def progress(label: str, total: int, every_items: int | None = None, every_seconds: float = 30.0) -> Iterator[Advance]:
    """Yield `advance(done, detail)`; shows a bar interactively, otherwise prints periodic lines to stderr.

    In a log a line is printed when `every_items` more items are done (default: a tenth of the total) or
    `every_seconds` have passed since the last line, and once at the end, with the rate and time left.
    """
    if err_console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=err_console, transient=True)
        with bar:
            task = bar.add_task(label, total=total)
            yield lambda done, detail="": bar.update(task, completed=done,
                                                     description=f"{label} ({detail})" if detail else label)
        return
    step = every_items or max(1, total // 10)
    start = last_time = time.monotonic()
    last_done = 0

    def line(done: int, detail: str) -> None:
        elapsed = time.monotonic() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", about {(total - done) / rate:.0f} s left" if rate > 0 and done < total else ""
        what = f" ({detail})" if detail else ""
        err_console.print(f"{label}: {done}/{total} done in {elapsed:.0f} s{left}{what}", highlight=False,
                          soft_wrap=True)

    def advance(done: int, detail: str = "") -> None:
        nonlocal last_time, last_done
        now = time.monotonic()
        if done - last_done >= step or now - last_time >= every_seconds:
            line(done, detail)
            last_time, last_done = now, done

    yield advance
    line(total, "")
