"""Backend registry: selection, overrides, clear errors, and the docstring examples."""

import doctest
import importlib

import pytest
import torch

import slifmr_kernels as sk
from slifmr_kernels import backends


def test_torch_is_always_available():
    assert "torch" in sk.available_backends()
    assert "torch" in sk.available_backends(op="propagate")


def test_auto_prefers_numba_on_cpu_when_installed():
    x = torch.randn(4, 2)
    g = sk.CSRGraph.from_edges([0, 1], [1, 0], shape=(4, 4))
    sk.propagate(g, x)
    want = "numba" if "numba" in sk.available_backends(op="propagate") else "torch"
    assert sk.last_backend("propagate") == want == sk.last_backend()


def test_per_call_order_skips_what_cannot_run(monkeypatch):
    monkeypatch.delenv("SLIFMR_BACKEND", raising=False)
    # cuda cannot run on CPU tensors: the next one in the call's order serves
    assert backends.resolve("topk", "auto", "cpu", order=("cuda", "torch")) == "torch"
    assert sk.last_backend("topk") == "torch"
    # a named backend or SLIFMR_BACKEND still wins over the call's order
    assert backends.resolve("topk", "torch", "cpu", order=("numba",)) == "torch"
    monkeypatch.setenv("SLIFMR_BACKEND", "torch")
    assert backends.resolve("topk", "auto", "cpu", order=("numba",)) == "torch"


def test_env_override(monkeypatch):
    monkeypatch.setenv("SLIFMR_BACKEND", "torch")
    assert backends.resolve("propagate", "auto", "cpu") == "torch"
    monkeypatch.setenv("SLIFMR_BACKEND", "cobol")
    with pytest.raises(ValueError, match="SLIFMR_BACKEND"):
        backends.resolve("propagate", "auto", "cpu")
    # an explicit backend argument wins over the environment
    monkeypatch.setenv("SLIFMR_BACKEND", "cobol")
    assert backends.resolve("propagate", "torch", "cpu") == "torch"


def test_named_backend_that_cannot_run_raises():
    with pytest.raises(sk.BackendUnavailable, match="cuda"):
        backends.resolve("propagate", "cuda", "cpu")
    with pytest.raises(sk.BackendUnavailable, match="numba runs on CPU"):
        backends.resolve("topk", "numba", "cuda")


def test_missing_dependency_message_says_what_to_install(monkeypatch):
    real = importlib.import_module

    def numba_missing(name, *args, **kwargs):
        if name.endswith(".numba"):
            err = ModuleNotFoundError("No module named 'numba'")
            err.name = "numba"
            raise err
        return real(name, *args, **kwargs)

    monkeypatch.setattr(backends.importlib, "import_module", numba_missing)
    monkeypatch.setattr(backends, "_cache", {})
    monkeypatch.setattr(backends, "_errors", {})
    with pytest.raises(sk.BackendUnavailable, match="pip install numba"):
        backends.resolve("propagate", "numba", "cpu")
    assert "numba" not in sk.available_backends(op="propagate")
    # auto falls back quietly
    assert backends.resolve("propagate", "auto", "cpu") == "torch"


def test_op_without_a_backend_module_says_so(monkeypatch):
    real = importlib.import_module

    def absent(name, *args, **kwargs):
        if name == "slifmr_kernels.topk.cuda":
            err = ModuleNotFoundError(f"No module named {name!r}")
            err.name = name
            raise err
        return real(name, *args, **kwargs)

    monkeypatch.setattr(backends.importlib, "import_module", absent)
    monkeypatch.setattr(backends, "_cache", {})
    monkeypatch.setattr(backends, "_errors", {})
    with pytest.raises(sk.BackendUnavailable, match="has no cuda implementation"):
        backends.load("topk", "cuda")


@pytest.mark.parametrize(
    "module", ["slifmr_kernels.propagate.op", "slifmr_kernels.topk.op", "slifmr_kernels.backends"]
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_import_sets_the_omp_wait_policy_unless_given(preset):
    """Importing slifmr_kernels before torch sets OMP_WAIT_POLICY=PASSIVE (see
    slifmr_kernels/__init__.py); a value already in the environment wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    code = (
        "import os, slifmr_kernels, sys; assert 'torch' in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True
    ).stdout.split()
    assert out == [preset or "PASSIVE"]


def test_the_tour_runs_and_agrees_with_the_reference(capsys):
    """``python -m slifmr_kernels`` on tiny sizes: every backend line agrees with torch."""
    from slifmr_kernels.__main__ import main

    main(["--users", "60", "--items", "40", "--interactions", "400", "--dim", "8"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert lines and all(ln.count("100.0% same ids") == 2 for ln in lines)
    import re

    errs = [float(e) for ln in lines for e in re.findall(r"max err ([-+.e0-9]+)\)", ln)]
    assert len(errs) == 2 * len(lines) and max(errs) < 1e-4  # propagate and fuse per line
