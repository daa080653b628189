"""The CLI's progress: a tqdm bar on stderr, and the notices a user must see.

It implements :class:`pipeline.progress.Progress`, the interface the library reports through; the
library itself ships only the do-nothing default, so it never writes to the terminal.
"""

from __future__ import annotations

import os
import sys

import click


class TqdmProgress:
    """A tqdm bar on stderr with counts and rate.

    Bars show only on a terminal (or with CNNGRAPH_PROGRESS=1), so logs and pipes stay clean;
    messages always show.
    """

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable or not (sys.stderr.isatty() or os.environ.get("CNNGRAPH_PROGRESS") == "1")
        self._bar = None

    def start(self, total: int, unit: str, desc: str) -> None:
        """Replace the current bar (if any) by a new one of ``total`` ``unit``s."""
        from tqdm import tqdm

        self.finish()
        self._bar = tqdm(
            total=total, unit=unit, unit_scale=True, desc=desc, disable=self.disable,
            dynamic_ncols=True, smoothing=0.1,
        )

    def advance(self, n: int) -> None:
        """Move the bar on by ``n``."""
        if self._bar is not None:
            self._bar.update(n)

    def finish(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def message(self, text: str) -> None:
        """A line on stderr (above the bar when one shows)."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)
