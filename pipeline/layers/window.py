"""Sliding-window geometry (any number of spatial axes), exactly as TensorFlow pads.

``'same'`` padding splits the total padding with the smaller half first (asymmetric when odd);
``'causal'`` pads only before. Padded cells are constants: they yield no positions.
:meth:`Window.explicit` takes pads as given (ONNX's per-side ``pads``, ``ceil_mode`` windows past
the end): the same rule, so a max or an average over a window covers only its real members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _tuple(value, n: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value * n if len(value) == 1 else value


@dataclass(frozen=True)
class Window:
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    pad: tuple[int, ...]  # padding before, per axis

    @classmethod
    def make(cls, in_shape, out_shape, kernel, strides, dilation, padding: str) -> Window:
        n = len(in_shape)
        kernel, strides, dilation = _tuple(kernel, n), _tuple(strides, n), _tuple(dilation, n)
        pad = []
        for i, o, k, s, d in zip(in_shape, out_shape, kernel, strides, dilation, strict=True):
            span = (k - 1) * d + 1
            if padding == "valid":
                expect, before = (i - span) // s + 1, 0
            elif padding == "same":
                expect = -(-i // s)
                before = max((expect - 1) * s + span - i, 0) // 2
            elif padding == "causal":
                expect, before = -(-i // s), span - 1
            else:
                raise ValueError(f"padding {padding!r}")
            if expect != o:
                raise ValueError(f"output size {o} differs from the expected {expect} (padding {padding})")
            pad.append(before)
        return cls(tuple(in_shape), tuple(out_shape), kernel, strides, dilation, tuple(pad))

    @classmethod
    def explicit(cls, in_shape, out_shape, kernel, strides, dilation, pads) -> Window:
        """A window with explicit ``(before, after)`` pads per axis; every window needs a real member.

        The output size is ``out_shape`` (it may run past ``after``, as ONNX's ``ceil_mode`` does);
        cells outside the input yield no positions, whichever side they are on.
        """
        n = len(in_shape)
        kernel, strides, dilation = _tuple(kernel, n), _tuple(strides, n), _tuple(dilation, n)
        pads = [(int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in pads]
        if len(pads) != n or min(min(p) for p in pads) < 0:
            raise ValueError(f"pads {pads} are not (before, after) >= 0 for {n} axes")
        window = cls(tuple(in_shape), tuple(out_shape), kernel, strides, dilation, tuple(b for b, _ in pads))
        geometry = zip(in_shape, out_shape, pads, kernel, strides, dilation, strict=True)
        for axis, (i, o, (b, e), k, s, d) in enumerate(geometry):
            if (o - 1) * s + (k - 1) * d + 1 > i + b + e + s - 1:
                raise ValueError(f"output size {o} on axis {axis} runs past the pads ({b}, {e}) by a whole stride")
            members = np.zeros(o, dtype=np.int64)
            for kk in range(k):
                members[window.axis_valid(axis, kk)[0]] += 1
            if o < 1 or not members.all():
                raise ValueError(f"a window on axis {axis} has no member inside the input (pads ({b}, {e}))")
        return window

    @property
    def offsets(self) -> list[tuple[int, ...]]:
        """Kernel offsets in row-major order."""
        return [tuple(int(x) for x in k) for k in np.ndindex(*self.kernel)]

    def axis_valid(self, axis: int, k: int, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Output indices o in [lo, hi) whose member at offset k is inside the input, and that member."""
        hi = self.out_shape[axis] if hi is None else hi
        o = np.arange(lo, hi, dtype=np.int64)
        i = o * self.strides[axis] - self.pad[axis] + k * self.dilation[axis]
        ok = (i >= 0) & (i < self.in_shape[axis])
        return o[ok], i[ok]

    def positions(self, offset: tuple[int, ...], lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Flat (row-major) input and output positions of one kernel offset, output rows [lo, hi)."""
        src = np.zeros(1, dtype=np.int64)
        tgt = np.zeros(1, dtype=np.int64)
        for axis, k in enumerate(offset):
            o, i = self.axis_valid(axis, k, *((lo, hi) if axis == 0 else (0, None)))
            src = np.add.outer(src * self.in_shape[axis], i).ravel()
            tgt = np.add.outer(tgt * self.out_shape[axis], o).ravel()
        return src, tgt

    def count(self, lo: int = 0, hi: int | None = None) -> int:
        """Number of (output position, in-bounds member) pairs, analytically."""
        total = 0
        for offset in self.offsets:
            total += math.prod(
                len(self.axis_valid(axis, k, *((lo, hi) if axis == 0 else (0, None)))[0])
                for axis, k in enumerate(offset)
            )
        return total

    def members(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """In-bounds members per output position of rows [lo, hi), flat row-major."""
        hi = self.out_shape[0] if hi is None else hi
        per_axis = []
        for axis in range(len(self.in_shape)):
            a_lo, a_hi = (lo, hi) if axis == 0 else (0, self.out_shape[axis])
            cnt = np.zeros(a_hi - a_lo, dtype=np.int64)
            for k in range(self.kernel[axis]):
                o, _ = self.axis_valid(axis, k, a_lo, a_hi)
                cnt[o - a_lo] += 1
            per_axis.append(cnt)
        out = np.ones(1, dtype=np.int64)
        for cnt in per_axis:
            out = np.multiply.outer(out, cnt).ravel()
        return out
