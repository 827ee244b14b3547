"""The errors ``slifmr_kernels`` raises on purpose.

Every rejected argument raises an :class:`InputError` whose message names the argument and
the problem. :class:`InputError` is a ``ValueError``; the variants are also the built-in error
that fits (a wrong type is a ``TypeError``, an index out of range an ``IndexError``), so code
that catches the built-ins keeps working::

    KernelError                      anything the library raises on purpose
    ├── InputError(ValueError)       a bad argument value
    │   ├── InputTypeError(TypeError)    wrong type or dtype
    │   ├── InputIndexError(IndexError)  an id outside its range
    │   └── GraphError                   a graph's arrays break the CSR invariants
    │       ├── GraphTypeError(TypeError)
    │       └── GraphIndexError(IndexError)
    └── BackendUnavailable(RuntimeError) a named backend cannot run here

>>> import slifmr_kernels as sk
>>> try:
...     sk.CSRGraph([0, 2, 1], [0, 1], shape=(2, 2))
... except sk.GraphError as exc:
...     print(exc)
indptr must be non-decreasing; it decreases after row 1
"""

from __future__ import annotations

__all__ = [
    "KernelError",
    "InputError",
    "InputTypeError",
    "InputIndexError",
    "GraphError",
    "GraphTypeError",
    "GraphIndexError",
    "BackendUnavailable",
]


class KernelError(Exception):
    """Base of every error that ``slifmr_kernels`` raises on purpose."""


class InputError(KernelError, ValueError):
    """An argument was rejected; the message names the argument and the problem."""


class InputTypeError(InputError, TypeError):
    """An argument has the wrong type or dtype."""


class InputIndexError(InputError, IndexError):
    """An id (row, column, relation) lies outside its range."""


class GraphError(InputError):
    """A graph's arrays (indptr, indices, values, relation, shape, ...) break the CSR
    invariants."""


class GraphTypeError(GraphError, InputTypeError):
    """A graph array has the wrong type or dtype."""


class GraphIndexError(GraphError, InputIndexError):
    """A graph array holds an id outside its range (a column >= n_cols, a relation id >=
    num_relations)."""


class BackendUnavailable(KernelError, RuntimeError):
    """An explicitly requested backend cannot run here; the message says why and what to do."""
