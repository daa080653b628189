"""Progress reporting injected into long library calls.

The library never prints: it calls a :class:`Progress` it is given. The default does nothing; the
CLI passes a tqdm-backed one
(``pipeline.cli.progress.TqdmProgress``). ``message`` carries the few notices a user must see (e.g. "random
weights", "starting the managed Neo4j server").
"""

from __future__ import annotations

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
