"""What a run shows while it trains: step / total, the latest record's losses, the last validation
mean R@1, steps/s and the ETA.

On a terminal (stderr a TTY) a live tqdm bar with these as its postfix; elsewhere (a log file, a
pipe, a Ray worker or trial actor, whose output Ray forwards to the driver) one plain line per
logged record, led by the run's label, through this module's logger: ``--quiet`` silences both.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from tqdm.auto import tqdm

log = logging.getLogger(__name__)
VAL_R1 = "val/mean_recall_at_1"
LINE_PATTERN = r"\] step \d+/\d+"  # what Ray never merges as repeated lines (orchestrator/__init__.py)


class Progress:
    """Fed ``update(step, record)`` by the stage-2 callback, closed at the end (or used as a context
    manager). ``label`` leads each line (the run, or the trial and its parameters); ``show=False``
    (a rank other than 0) shows nothing. Steps/s and the ETA are measured from the first record on:
    stage 1 and the set-up before it are not training steps."""

    def __init__(
        self, total: int, label: str, *, show: bool = True, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.label, self.clock = total, label, clock
        self.show = show and log.isEnabledFor(logging.INFO)
        self.live = sys.stderr.isatty()
        self.bar: tqdm | None = None  # made at the first record, so that a run that trains nothing shows none
        self.first: tuple[int, float] | None = None  # the first record's step and time
        self.val: float | None = None

    def update(self, step: int, record: dict) -> None:
        """Show the record of ``step``: redraw the bar, or print one line."""
        if not self.show:
            return
        self.val = record.get(VAL_R1, self.val)
        fields = {k: f"{v:.4g}" for k, v in record.items() if k.startswith("loss/")}
        if self.val is not None:
            fields["val/R@1"] = f"{self.val:.2f}"
        if self.live:
            if self.bar is None:  # mininterval 0: each record redraws it (they come every log_every steps)
                self.bar = tqdm(
                    total=self.total,
                    initial=step,
                    desc=self.label,
                    unit="step",
                    file=sys.stderr,
                    mininterval=0,
                    postfix=fields,
                )
            else:
                self.bar.set_postfix(fields, refresh=False)
                self.bar.update(step - self.bar.n)
            return
        now = self.clock()
        self.first = self.first or (step, now)
        parts = [f"[{self.label}] step {step}/{self.total}", *(f"{k}={v}" for k, v in fields.items())]
        done, elapsed = step - self.first[0], now - self.first[1]
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts += [f"{rate:.2f} steps/s", f"ETA {tqdm.format_interval((self.total - step) / rate)}"]
        log.info("  ".join(parts))

    def close(self) -> None:
        """End the bar (left on screen at its last state); lines need no end."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_) -> None:
        self.close()
