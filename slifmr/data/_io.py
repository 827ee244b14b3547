"""Fast, strict parsing of whitespace-separated integer files.

Every reader here parses the whole file with one vectorised numpy call and only falls back to a
line-by-line scan when that call fails, so that a malformed file is reported as
``DataFormatError("path:line: what is wrong")`` without slowing down the common case.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Sequence

import numpy as np

__all__ = ["DataFormatError", "read_int_columns", "read_ragged_lines", "read_delimited",
           "read_npy_features"]

_INT_RE = re.compile(rb"^[+-]?\d+$")


class DataFormatError(ValueError):
    """A data file is malformed. The message starts with ``path:line:`` when a line is at fault."""


def _where(path: str, line: Optional[int] = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as f:
        return f.read()


def _line_token_counts(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per line of ``data``: number of whitespace-separated tokens; and the 1-based line number.

    Vectorised over the bytes (no Python loop over lines): a token starts at a non-blank byte
    preceded by a blank byte or the start of the file.
    """
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nl = b == 10
    blank = nl | (b == 32) | (b == 9) | (b == 13) | (b == 11) | (b == 12)
    start = ~blank
    start[1:] &= blank[:-1]
    # Line index of each byte = number of newlines strictly before it.
    line_of = np.cumsum(nl, dtype=np.int64)
    line_of[1:] = line_of[:-1].copy()
    line_of[0] = 0
    n_lines = int(nl.sum()) + (0 if data.endswith(b"\n") else 1)
    counts = np.bincount(line_of[start], minlength=n_lines)
    return counts, np.arange(1, n_lines + 1)


def _is_number(tok: bytes, integer: bool) -> bool:
    if integer:
        return bool(_INT_RE.match(tok)) and abs(int(tok)) < 2 ** 62
    try:
        return np.isfinite(float(tok))
    except ValueError:
        return False


def _scan_for_bad_token(path: str, data: bytes, line_offset: int = 0, integer: bool = True) -> None:
    """Slow path: find the first token that is not a number and raise with its line."""
    kind = "an integer" if integer else "a finite number"
    for lineno, line in enumerate(data.split(b"\n"), start=1 + line_offset):
        for tok in line.split():
            if not _is_number(tok, integer):
                raise DataFormatError(f"{_where(path, lineno)}: expected {kind}, got "
                                      f"{tok[:40].decode(errors='replace')!r}")
    raise DataFormatError(f"{path}: could not parse the file as numbers")


def _parse_numbers(path: str, data: bytes, line_offset: int = 0, dtype=np.int64) -> np.ndarray:
    if not data.strip():
        return np.zeros(0, dtype)
    integer = np.issubdtype(np.dtype(dtype), np.integer)
    try:
        # sep=" " matches any run of whitespace, newlines included.
        vals = np.fromstring(data, dtype=dtype, sep=" ")
    except ValueError:
        vals = None
    if vals is None or (not integer and not np.isfinite(vals).all()):
        _scan_for_bad_token(path, data, line_offset, integer)
    return vals


def _skip_header(data: bytes, n: int) -> tuple[bytes, int]:
    pos = 0
    for _ in range(n):
        nxt = data.find(b"\n", pos)
        if nxt < 0:
            return b"", n
        pos = nxt + 1
    return data[pos:], n


def read_int_columns(path: str, ncols: int, *, header_lines: int = 0,
                     names: Sequence[str] = (), dtype=np.int64) -> np.ndarray:
    """Read a file of ``ncols`` whitespace-separated integers per line (blank lines allowed).

    Returns an array of ``dtype`` (int64 by default; float64 for mixed numeric columns) of shape
    (n_lines, ncols). A line with a different number of fields or
    a field that is not an integer raises ``DataFormatError`` naming the file and line.
    """
    data = _read_bytes(path)
    body, skipped = _skip_header(data, header_lines)
    counts, lines = _line_token_counts(body)
    bad = np.nonzero((counts != 0) & (counts != ncols))[0]
    if bad.size:
        i = int(bad[0])
        what = f" ({' '.join(names)})" if names else ""
        raise DataFormatError(f"{_where(path, int(lines[i]) + skipped)}: expected {ncols} fields"
                              f"{what}, got {int(counts[i])}")
    vals = _parse_numbers(path, body, skipped, dtype)
    return vals.reshape(-1, ncols)


def read_ragged_lines(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a KGAT-style file where each non-blank line is ``key v1 v2 ...``.

    Returns ``(keys, values, line_numbers)``: ``keys`` int64 (n_pairs,), the first field of the
    line each value came from; ``values`` int64 (n_pairs,); ``line_numbers`` int64 (n_pairs,)
    1-based, for error messages about individual values. Lines with a key only are allowed (a
    user without interactions).
    """
    data = _read_bytes(path)
    counts, lines = _line_token_counts(data)
    vals = _parse_numbers(path, data)
    nonblank = counts > 0
    counts, lines = counts[nonblank], lines[nonblank]
    first = np.zeros(counts.size, np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    keys_per_line = vals[first]
    per_line = counts - 1
    is_key = np.zeros(vals.size, bool)
    is_key[first] = True
    values = vals[~is_key]
    keys = np.repeat(keys_per_line, per_line)
    line_numbers = np.repeat(lines, per_line)
    return keys, values, line_numbers


def read_delimited(path: str, sep: str = "\t", *, header: bool = True) -> tuple[list[str], list[list[str]]]:
    """Read a small delimited text file (mapping tables, RecBole atomic files) into strings.

    Returns ``(header_fields, rows)``; every row is checked to have the header's field count.
    Used only for files that are small or contain string tokens.
    """
    data = _read_bytes(path).decode("utf-8", errors="replace")
    lines = data.split("\n")
    head: list[str] = []
    rows: list[list[str]] = []
    start = 0
    if header:
        while start < len(lines) and not lines[start].strip():
            start += 1
        if start == len(lines):
            raise DataFormatError(f"{path}: empty file, expected a header line")
        head = lines[start].rstrip("\r").split(sep)
        start += 1
    width = len(head) if header else None
    for lineno in range(start, len(lines)):
        line = lines[lineno].rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(sep)
        if width is None:
            width = len(fields)
        if len(fields) != width:
            raise DataFormatError(f"{_where(path, lineno + 1)}: expected {width} fields separated "
                                  f"by {sep!r}, got {len(fields)}")
        rows.append(fields)
    return head, rows


def read_npy_features(path: str, num_items: int) -> np.ndarray:
    """Load an item feature matrix (row i = item i) as float32 (num_items, d) and check it."""
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from exc
    if arr.ndim != 2:
        raise DataFormatError(f"{path}: feature matrix must be 2-D (items, dim), got shape {arr.shape}")
    if arr.shape[0] < num_items:
        raise DataFormatError(f"{path}: {arr.shape[0]} feature rows but the interactions use "
                              f"{num_items} items (row i must be item i)")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(f"{path}: feature dtype must be numeric, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        row = int(np.nonzero(~np.isfinite(arr).all(1))[0][0])
        raise DataFormatError(f"{path}: row {row} (item {row}) contains NaN or inf")
    return arr
