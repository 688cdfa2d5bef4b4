"""A growable numpy column: the storage of every per-slot and per-term array of the index."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


class Column:
    """An array of ``size`` values in a buffer that doubles when it fills (amortised O(1)
    appends); new positions hold ``fill``. ``data`` is the whole buffer, ``view()`` the
    ``size`` values in use."""

    def __init__(self, dtype: Any, fill: Any = 0, data: npt.NDArray[Any] | None = None,
                 capacity: int = 16):
        self.fill = fill
        if data is None:
            self.data = np.full(capacity, fill, dtype=dtype)
            self.size = 0
        else:
            self.data = np.asarray(data, dtype=dtype)
            self.size = len(self.data)

    def ensure(self, size: int) -> None:
        """At least ``size`` values in use; the new ones are ``fill``."""
        if size > len(self.data):
            grown = np.full(max(size, 2 * len(self.data)), self.fill, dtype=self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.size = max(self.size, size)

    def extend(self, values: npt.ArrayLike) -> None:
        values = np.asarray(values, dtype=self.data.dtype)
        start = self.size
        self.ensure(start + len(values))
        self.data[start:self.size] = values

    def view(self) -> npt.NDArray[Any]:
        return self.data[:self.size]

    def copy(self) -> npt.NDArray[Any]:
        return self.data[:self.size].copy()
