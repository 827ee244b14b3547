"""One version: slifmr_kernels/_version.py, re-exported by both packages and read by the build."""

import importlib.metadata
import os

import pytest

import slifmr
import slifmr_kernels
from slifmr_kernels._version import __version__

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_packages_share_the_version():
    assert slifmr.__version__ == slifmr_kernels.__version__ == __version__
    parts = __version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts), __version__


def test_installed_metadata_matches():
    try:
        installed = importlib.metadata.version("slifmr")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("slifmr is not installed (run from a bare checkout)")
    assert installed == __version__


def test_pyproject_reads_the_version_module():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        cfg = tomllib.load(f)
    assert "version" not in cfg["project"] and "version" in cfg["project"]["dynamic"]
    assert cfg["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "slifmr_kernels._version.__version__"}
    with open(os.path.join(ROOT, "setup.py")) as f:
        assert "version=" not in f.read()


def test_changelog_has_the_version():
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        assert f"## [{__version__}]" in f.read()
