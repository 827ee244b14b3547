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
    import builtins

    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    monkeypatch.setattr(backends, "_cache", {})
    monkeypatch.setattr(backends, "_errors", {})
    import sys
    monkeypatch.delitem(sys.modules, "slifmr_kernels.propagate.numba", raising=False)
    with pytest.raises(sk.BackendUnavailable, match="pip install numba"):
        backends.resolve("propagate", "numba", "cpu")
    # auto falls back quietly
    assert backends.resolve("propagate", "auto", "cpu") == "torch"


@pytest.mark.parametrize("module", ["slifmr_kernels.propagate.op", "slifmr_kernels.topk.op",
                                    "slifmr_kernels.backends"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0
