"""What a part of the memory index keeps in a snapshot: plain JSON values and named numpy
arrays, and the checks they pass when read back.

A snapshot is a cache read from disk, so nothing in it may run code (arrays load with
``allow_pickle=False``, everything else is JSON) and nothing in it is trusted: the class
that owns a part reads each value through ``integer``/``integers``/``strings`` and each
array through ``array``, which check type, dtype and shape. A failed check raises
``ValueError``: the snapshot is unreadable, and the index is built from Postgres instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


class Saved:
    """``values`` go to JSON (nested by part), ``arrays`` to one ``.npz`` (flat, each name
    prefixed with its part: ``slots.ids``)."""

    def __init__(self, values: dict[str, Any] | None = None,
                 arrays: dict[str, Array] | None = None, prefix: str = "") -> None:
        self.values: dict[str, Any] = values if values is not None else {}
        self.arrays: dict[str, Array] = arrays if arrays is not None else {}
        self.prefix = prefix  # the part's, in error messages

    @classmethod
    def of(cls, parts: dict[str, Saved], **values: Any) -> Saved:
        """One ``Saved`` of several parts (read back with ``part``), and ``values`` of its own."""
        whole = cls(dict(values))
        for name, part in parts.items():
            whole.values[name] = part.values
            whole.arrays.update({f"{name}.{key}": array for key, array in part.arrays.items()})
        return whole

    def part(self, name: str) -> Saved:
        values = self.values.get(name)
        if not isinstance(values, dict):
            raise ValueError(f"snapshot has no part {self.prefix}{name}")
        prefix = f"{name}."
        return Saved(values, {key[len(prefix):]: array for key, array in self.arrays.items()
                              if key.startswith(prefix)}, f"{self.prefix}{prefix}")

    # -- reading, checked ------------------------------------------------------------------

    def integer(self, name: str) -> int:
        value = self._value(name)
        if type(value) is not int:  # (a bool is an int to isinstance)
            raise ValueError(f"snapshot value {self.prefix}{name} is not an integer")
        return value

    def integers(self, name: str) -> list[int]:
        values = self._value(name)
        if not isinstance(values, list) or any(type(v) is not int for v in values):
            raise ValueError(f"snapshot value {self.prefix}{name} is not a list of integers")
        return values

    def strings(self, name: str) -> list[str]:
        values = self._value(name)
        if not isinstance(values, list) or any(type(v) is not str for v in values):
            raise ValueError(f"snapshot value {self.prefix}{name} is not a list of strings")
        return values

    def array(self, name: str, dtype: npt.DTypeLike, shape: tuple[int | None, ...],
              within: tuple[int, int] | None = None) -> Array:
        """The array ``name``, exactly of ``dtype`` (byte order included) and ``shape``
        (None: any length on that axis), every value in ``[low, high)`` of ``within`` (a code
        or slot read from a snapshot must point at something that exists); writable, as the
        index changes its arrays in place."""
        array = self.arrays.get(name)
        if array is None:
            raise ValueError(f"snapshot has no array {self.prefix}{name}")
        if array.dtype != np.dtype(dtype) or array.ndim != len(shape) or any(
                want is not None and have != want
                for have, want in zip(array.shape, shape, strict=True)):
            raise ValueError(f"snapshot array {self.prefix}{name} is {array.dtype}"
                             f"{list(array.shape)}, not {np.dtype(dtype)}{list(shape)}")
        if within is not None and array.size and (
                int(array.min()) < within[0] or int(array.max()) >= within[1]):
            raise ValueError(f"snapshot array {self.prefix}{name} holds values outside "
                             f"[{within[0]}, {within[1]})")
        if array.flags.writeable and array.flags.c_contiguous:
            return array
        return np.array(array, order="C")

    def _value(self, name: str) -> Any:
        if name not in self.values:
            raise ValueError(f"snapshot has no value {self.prefix}{name}")
        return self.values[name]

