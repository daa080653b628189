"""Progress reporting injected into long library calls.

The library never prints: it calls a :class:`Progress` it is given. The default does nothing; the
CLI passes a tqdm-backed one. ``message`` carries the few notices a user must see (e.g. "random
weights", "starting the managed Neo4j server").
"""

from __future__ import annotations

import os
import sys
from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, unit: str, desc: str) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...

    def message(self, text: str) -> None: ...


class NullProgress:
    """Does nothing: the library default."""

    def start(self, total: int, unit: str, desc: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def message(self, text: str) -> None:
        pass


NULL = NullProgress()


class TqdmProgress:
    """A tqdm bar on stderr with counts and rate (used by the CLI).

    Bars show only on a terminal (or with CNNGRAPH_PROGRESS=1), so logs and pipes stay clean;
    messages always show.
    """

    def __init__(self, disable: bool = False):
        self.disable = disable or not (sys.stderr.isatty() or os.environ.get("CNNGRAPH_PROGRESS") == "1")
        self._bar = None

    def start(self, total: int, unit: str, desc: str) -> None:
        from tqdm import tqdm

        self.finish()
        self._bar = tqdm(
            total=total, unit=unit, unit_scale=True, desc=desc, disable=self.disable,
            dynamic_ncols=True, smoothing=0.1,
        )

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def message(self, text: str) -> None:
        import click

        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)
