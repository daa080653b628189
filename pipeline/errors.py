"""The library's error hierarchy.

Every error carries an actionable message; the CLI prints ``Error: <message>`` and exits 1.
Structured fields (layer, file, ...) stay on the exception for programmatic callers.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class CnnGraphError(Exception):
    """Base of every error cnngraph raises on purpose."""

    #: True when retrying the same operation later may succeed (network, server busy).
    transient = False


class ModelError(CnnGraphError):
    """The model cannot be read, built or walked (bad name, file, input shape)."""


class UnsupportedLayerError(ModelError):
    """A layer type has no translator, or this layer's configuration has no graph form."""

    #: Where the full list of supported layer types is (generated from real runs).
    SUPPORT_DOC = "docs/support.md"

    def __init__(self, layer: str, layer_type: str, supported: list[str], why: str = ""):
        import difflib

        self.layer, self.layer_type, self.supported = layer, layer_type, supported
        #: Up to five supported types whose names are closest to layer_type (when it has no translator).
        self.closest = [] if why else difflib.get_close_matches(layer_type, supported, n=5, cutoff=0.6)
        if why:
            tail = f" ({why})"
        elif self.closest:
            tail = f"; closest supported types: {', '.join(self.closest)} (all in {self.SUPPORT_DOC})"
        else:
            tail = f"; see {self.SUPPORT_DOC} for the supported types"
        super().__init__(f"layer {layer!r} of type {layer_type} is not supported{tail}")


class UsageError(CnnGraphError):
    """A bad option value (input shape, layer range, ...)."""


class OutputError(CnnGraphError):
    """Output cannot be written (no space, not a folder, incomplete dataset)."""


class VerificationError(CnnGraphError):
    """Replay of the extracted graph does not reproduce the model."""


class Neo4jError(CnnGraphError):
    """The Neo4j server cannot be reached, started, or loaded."""


class Neo4jUnavailable(Neo4jError):
    """The server is down or unreachable; retrying after starting it can succeed."""

    transient = True


class LoadMismatch(Neo4jError):
    """Counts in the database differ from the extraction manifest."""


def is_disk_full(err: BaseException) -> bool:
    """True for "no space left" and quota errors (pyarrow reports them without an errno)."""
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextmanager
def disk_full_as(where: object, what: str, then: str) -> Iterator[None]:
    """Turn a disk-full OSError inside the block into an OutputError that says what to do.

    ``what`` names the job ("the extraction"), ``then`` what the user should know about the
    files left behind (the callers never present them as complete).
    """
    try:
        yield
    except OSError as err:
        if is_disk_full(err):
            raise OutputError(f"the disk at {where} filled up during {what} ({err}); {then}") from err
        raise
