"""slifmr_kernels/_cuda.py, the loader of the CUDA extension: a clear ImportError, and a
BackendUnavailable from the registry, that say how to build it when it is absent."""

import importlib
import os
import subprocess
import sys

import pytest

from tests.cuda_emu import CUDA_BACKEND_MODULES, ROOT, fresh_cuda_backends


def _extension_installed() -> bool:
    try:
        importlib.import_module("slifmr_kernels._C")
        return True
    except ImportError:
        return False


@pytest.fixture
def fresh_cuda_modules():
    """Forget cached backend modules / loaded ops around a test."""
    with fresh_cuda_backends() as cuda_loader:
        yield cuda_loader


@pytest.mark.skipif(_extension_installed(), reason="the CUDA extension is installed here")
def test_cuda_backend_import_error_is_clear(fresh_cuda_modules, monkeypatch):
    monkeypatch.delenv("SLIFMR_CUDA_LIB", raising=False)
    for mod in CUDA_BACKEND_MODULES:
        with pytest.raises(ImportError, match="FORCE_CUDA=1 pip install --no-build-isolation"):
            importlib.import_module(mod)
        sys.modules.pop(mod, None)


def test_cuda_lib_env_pointing_nowhere(fresh_cuda_modules, monkeypatch, tmp_path):
    missing = str(tmp_path / "nope" / "_C.so")
    monkeypatch.setenv("SLIFMR_CUDA_LIB", missing)
    with pytest.raises(ImportError, match="nope"):
        fresh_cuda_modules.load_ops()


@pytest.mark.skipif(_extension_installed(), reason="the CUDA extension is installed here")
def test_registry_reports_cuda_unavailable():
    """In a fresh process (this one may hold the emulation build): the registry turns the
    ImportError into BackendUnavailable with the build command."""
    code = (
        "from slifmr_kernels.backends import BackendUnavailable, load\n"
        "try:\n    load('topk', 'cuda')\nexcept BackendUnavailable as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SLIFMR_CUDA_LIB"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "FORCE_CUDA=1" in r.stdout and "not built" in r.stdout
