"""Fast, strict parsing of whitespace-separated integer files.

Every reader here parses the whole file with one vectorised numpy call and only falls back to a
line-by-line scan when that call fails, so that a malformed file is reported as
``DataFormatError("path:line: what is wrong")`` without slowing down the common case.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import NoReturn

import numpy as np

__all__ = [
    "DataFormatError",
    "read_int_columns",
    "read_ragged_lines",
    "read_delimited",
    "read_npy_features",
    "npy_rows",
    "feature_files",
    "nonblank_line_numbers",
    "check_id_bound",
    "parse_int_tokens",
    "require_rows",
    "data_files",
]

_INT_RE = re.compile(rb"^[+-]?\d+$")
# numpy's text parser saturates an integer beyond int64 at the int64 limit instead of failing;
# no valid id comes near this bound, so a parsed value at or past it means "look closer".
_INT_LIMIT = 2**62


class DataFormatError(ValueError):
    """A data file is malformed. The message starts with ``path:line:`` when a line is at fault."""


def _where(path: str, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:  # permissions, I/O errors: the file exists but cannot be read
        raise DataFormatError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def data_files(pattern: str) -> list:
    """Sorted regular files matching a glob ``pattern`` (a directory named ``x.inter`` or
    ``image_feat.npy`` is not a data file)."""
    import glob

    return sorted(f for f in glob.glob(pattern) if os.path.isfile(f))


def feature_files(path: str) -> dict:
    """Modality name -> feature file of a dataset directory: ``<m>_feat.npy`` is modality ``m``,
    and a variant ``<m>_feat_<v>.npy`` (e.g. ``text_feat_llm.npy``) is modality ``<m>_<v>``."""
    found = {}
    for f in data_files(os.path.join(path, "*_feat*.npy")):
        stem = os.path.basename(f)[: -len(".npy")]
        base, _, variant = stem.partition("_feat")
        if base and (not variant or variant.startswith("_") and len(variant) > 1):
            found[base + variant] = f
    return found


def require_rows(path: str, n: int, what: str = "interactions", hint: str = "") -> None:
    """Raise ``DataFormatError("path: no <what> ...")`` when a file yielded ``n == 0`` rows."""
    if n == 0:
        raise DataFormatError(f"{path}: no {what}: the file is empty{hint}")


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


def _token_problem(tok: bytes, integer: bool) -> str | None:
    """None if ``tok`` is a valid number of the wanted kind, else what is wrong with it."""
    shown = repr(tok[:40].decode(errors="replace"))
    if integer:
        if not _INT_RE.match(tok):
            return f"expected an integer, got {shown}"
        if abs(int(tok)) >= _INT_LIMIT:
            return f"integer {shown} is out of range (|value| must be below 2^62)"
        return None
    try:
        return None if np.isfinite(float(tok)) else f"expected a finite number, got {shown}"
    except ValueError:
        return f"expected a finite number, got {shown}"


def _scan_for_bad_token(path: str, data: bytes, line_offset: int = 0, integer: bool = True) -> NoReturn:
    """Slow path: find the first token that is not a valid number and raise with its line."""
    for lineno, line in enumerate(data.split(b"\n"), start=1 + line_offset):
        for tok in line.split():
            problem = _token_problem(tok, integer)
            if problem is not None:
                raise DataFormatError(f"{_where(path, lineno)}: {problem}")
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
    if vals is None:
        _scan_for_bad_token(path, data, line_offset, integer)
    # one min/max (or isfinite) pass over the values: cheap next to the parse itself
    suspect = (
        (vals.size and (vals.max() >= _INT_LIMIT or vals.min() <= -_INT_LIMIT))
        if integer
        else not np.isfinite(vals).all()
    )
    if suspect:
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


def read_int_columns(
    path: str, ncols: int, *, header_lines: int = 0, names: Sequence[str] = (), dtype=np.int64
) -> np.ndarray:
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
        raise DataFormatError(
            f"{_where(path, int(lines[i]) + skipped)}: expected {ncols} fields{what}, got {int(counts[i])}"
        )
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


def read_delimited(path: str, sep: str = "\t", *, header: bool = True, with_lines: bool = False) -> tuple:
    """Read a small delimited text file (mapping tables, RecBole atomic files) into strings.

    Returns ``(header_fields, rows)``, or ``(header_fields, rows, line_numbers)`` with
    ``with_lines`` (the 1-based line of each row: blank lines are skipped); every row is checked
    to have the header's field count. Used only for files that are small or contain string
    tokens.
    """
    data = _read_bytes(path).decode("utf-8", errors="replace")
    lines = data.split("\n")
    head: list[str] = []
    rows: list[list[str]] = []
    numbers: list[int] = []
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
            raise DataFormatError(
                f"{_where(path, lineno + 1)}: expected {width} fields separated by {sep!r}, got {len(fields)}"
            )
        rows.append(fields)
        numbers.append(lineno + 1)
    return (head, rows, numbers) if with_lines else (head, rows)


def parse_int_tokens(
    path: str, tokens: Sequence[str], lines: Sequence[int], what: str, *, nonnegative: bool = False
) -> np.ndarray:
    """int64 array of decimal integer ``tokens`` (fields of :func:`read_delimited` rows);
    a token that is not an integer, is beyond 2^62, or (``nonnegative``) is negative raises
    ``DataFormatError("path:line: <what> ...")``, ``lines[k]`` being the line of ``tokens[k]``."""
    out = np.empty(len(tokens), np.int64)
    for k, tok in enumerate(tokens):
        text = tok.strip()
        problem = _token_problem(text.encode(errors="replace"), True)
        if problem is None and nonnegative and text.startswith("-") and int(text) != 0:
            problem = f"expected a non-negative integer, got {text[:40]!r}"
        if problem is not None:
            raise DataFormatError(f"{_where(path, lines[k])}: {what}: {problem}")
        out[k] = int(text)
    return out


def nonblank_line_numbers(path: str, header_lines: int = 0) -> np.ndarray:
    """1-based line number of each non-blank line after ``header_lines`` of the file: row r of
    :func:`read_int_columns` came from line ``nonblank_line_numbers(path, h)[r]``. Re-reads the
    file, so it is meant for error messages, off the fast path."""
    body, skipped = _skip_header(_read_bytes(path), header_lines)
    counts, lines = _line_token_counts(body)
    return lines[counts > 0] + skipped


def check_id_bound(path: str, ids: np.ndarray, lines, bound: int, what: str, rule: str) -> None:
    """Raise ``DataFormatError("path:line: <what> id N is too large ...")`` for the first id in
    ``ids`` that is ``>= bound``.

    The id spaces of the loaded layouts are dense (0..n-1), so a file can name at most as many
    ids as it has values that introduce one (``rule`` says which, for the message); an id past
    that is a corrupt file, and rejecting it here keeps every table sized by an id O(input).
    ``lines``: the 1-based line of each id, or a callable returning them (computed only when an
    id is rejected).
    """
    if ids.size == 0 or ids.max() < bound:
        return
    first = int(np.argmax(ids >= bound))
    line_of = lines() if callable(lines) else lines
    value = ids[first]
    shown = int(value) if float(value) < 2**53 or np.issubdtype(ids.dtype, np.integer) else f"{value:g}"
    raise DataFormatError(
        f"{_where(path, int(line_of[first]))}: {what} id {shown} is "
        f"too large: ids are dense (0..n-1) and this dataset can define at most "
        f"{bound} {what} ids ({rule})"
    )


def _npy_header(path: str) -> tuple:
    """``(shape, dtype)`` of a ``.npy`` file from its header alone, after checking that the
    file holds exactly the bytes the header promises (a 128-byte file claiming 10^12 values
    is an error here, not an allocation). Nothing in the header is executed."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # 3.0 only adds UTF-8 field names: structured arrays, never features
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        except (ValueError, OSError, SyntaxError) as exc:
            raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from None
        offset = f.tell()
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise DataFormatError(
            f"{path}: feature dtype must be a plain number type, got {dtype} "
            f"(object and structured arrays are not loaded)"
        )
    have = os.path.getsize(path) - offset
    need = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for any header
    if have != need:
        raise DataFormatError(
            f"{path}: the header says shape {shape} of {dtype} ({need} bytes "
            f"of data), but the file holds {have} bytes after the header"
        )
    return shape, dtype


def npy_rows(path: str) -> int:
    """Number of rows of a ``.npy`` array (header only; checked as :func:`read_npy_features`
    checks it), or 0 for an array without dimensions."""
    shape, _ = _npy_header(path)
    return int(shape[0]) if shape else 0


def read_npy_features(path: str, num_items: int) -> np.ndarray:
    """Load an item feature matrix (row i = item i) as float32 (num_items, d) and check it.

    The header is checked before any data is read: shape 2-D with d >= 1 and at least
    ``num_items`` rows, a real number dtype (integers, floats; complex, bool, object and
    structured arrays are rejected), the file's size equal to what the header promises. Values
    must be finite in float32. Errors are ``DataFormatError`` naming the file.
    """
    shape, dtype = _npy_header(path)
    if len(shape) != 2:
        raise DataFormatError(f"{path}: feature matrix must be 2-D (items, dim), got shape {shape}")
    if shape[1] < 1:
        raise DataFormatError(f"{path}: feature matrix has no columns (shape {shape})")
    if shape[0] < num_items:
        raise DataFormatError(
            f"{path}: {shape[0]} feature rows but the interactions use "
            f"{num_items} items (row i must be item i)"
        )
    if dtype.kind not in "fiu":
        what = " (the imaginary part would be lost)" if dtype.kind == "c" else ""
        raise DataFormatError(
            f"{path}: feature dtype must be a real number type (float or integer), got {dtype}{what}"
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from exc
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: rejected just below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise DataFormatError(
            f"{path}: row {row} (item {row}) contains NaN or inf (or a value beyond float32's range)"
        )
    return arr
