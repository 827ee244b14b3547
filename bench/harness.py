"""What every benchmark script here shares: the timer, a description of the machine, reports.

* :func:`time_call` (from ``slifmr_kernels.testing``, where ``python -m slifmr_kernels`` uses it
  too): median or best of repeated calls after a warm-up, CUDA-synchronised on a GPU, with an
  optional time cap and peak-memory growth.
* :func:`environment`: library versions, thread counts, CPU model, ``OPENBLAS_CORETYPE`` and
  the OpenBLAS kernel family, load, and the GPU when there is one, as one JSON-able dict.
* :func:`markdown_table`, :func:`write_report` (markdown + JSON beside it),
  :func:`append_jsonl`.

The scripts run as ``python bench/<script>.py`` (this folder is then ``sys.path[0]``) and are
imported by tests and by ``bench_*.py``; they put this folder on ``sys.path`` themselves before
``import harness``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a checkout without an install
    sys.path.insert(0, str(ROOT))

from slifmr_kernels.testing import Timing, time_call  # noqa: E402

__all__ = [
    "Timing",
    "time_call",
    "environment",
    "blas_core",
    "cpu_model",
    "markdown_table",
    "write_report",
    "append_jsonl",
]


# --------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` elsewhere, which
    on Linux often says only ``x86_64``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_core() -> str:
    """OpenBLAS kernel family scipy's library runs (set by OPENBLAS_CORETYPE, else detected);
    ``"?"`` without scipy or threadpoolctl."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's OpenBLAS)
        from threadpoolctl import threadpool_info

        return ",".join(
            sorted(
                {str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"}
            )
        )
    except ImportError:
        return "?"


def _version(module: str, *dists: str):
    """Version of ``module`` if imported already, else of the first installed distribution
    named (no import: importing FAISS or Triton only to name it costs seconds)."""
    mod = sys.modules.get(module)
    if mod is not None and hasattr(mod, "__version__"):
        return mod.__version__
    for dist in dists or (module,):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict:
    """The machine and libraries a measurement ran on, as a flat JSON-able dict.

    Keys: python, torch, numpy, scipy, numba, faiss, triton (versions; absent when not
    installed), cpu (``platform.processor()``), cpu_model, cores, threads (torch's),
    numba_threads (when Numba is loaded), OPENBLAS_CORETYPE, openblas_core, loadavg (1 min),
    and on a CUDA machine gpu (name), capability and cuda (the toolkit torch was built with).
    """
    info = {"python": platform.python_version(), "torch": torch.__version__}
    for key, module, dists in (
        ("numpy", "numpy", ()),
        ("scipy", "scipy", ()),
        ("numba", "numba", ()),
        ("faiss", "faiss", ("faiss-cpu", "faiss-gpu", "faiss")),
        ("triton", "triton", ()),
    ):
        v = _version(module, *dists)
        if v is not None:
            info[key] = v
    info.update(
        cpu=platform.processor() or platform.machine(),
        cpu_model=cpu_model(),
        cores=os.cpu_count(),
        threads=torch.get_num_threads(),
    )
    if "numba" in sys.modules:
        info["numba_threads"] = sys.modules["numba"].get_num_threads()
    info.update(
        OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", ""),
        openblas_core=blas_core(),
        loadavg=os.getloadavg()[0],
    )
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(),
            capability=list(torch.cuda.get_device_capability()),
            cuda=torch.version.cuda,
        )
    return info


# --------------------------------------------------------------------------- reports
def markdown_table(rows, columns, *, pad: bool = False, right=()) -> str:
    """A markdown table of ``rows`` (dicts; a missing key is an empty cell) over ``columns``.

    ``pad``: every cell left-justified to its column's width (readable as plain text);
    ``right``: columns whose separator marks them right-aligned (``---:``, unpadded tables).
    """
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    if pad:
        widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(columns)]
        head = "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |"
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        body = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    else:
        head = "| " + " | ".join(columns) + " |"
        sep = "|" + "".join("---:|" if c in right else "---|" for c in columns)
        body = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([head, sep] + body)


def write_report(md_path, markdown: str, data) -> Path:
    """Write ``markdown`` to ``md_path`` and ``data`` as indented JSON beside it (same name,
    ``.json``); folders are created. Values JSON cannot hold are written as ``str``.
    Returns the markdown path."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown)
    md_path.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
    return md_path


def append_jsonl(path, record) -> None:
    """Append ``record`` as one JSON line to ``path`` (a results log many runs add to)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
