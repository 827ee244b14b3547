"""Every repository path and every ``slifmr`` / ``slifmr_kernels`` name the docs quote exists."""

import glob
import importlib
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOCS = ["README.md", "CHANGELOG.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
)
TOP = ("bench/", "tests/", "slifmr/", "slifmr_kernels/", "csrc/", "docs/", "tools/", "configs/", ".ci/")
QUOTED = re.compile(r"`([^`\s]+)`")


def _expand(token: str) -> list:
    """``a/{b,c}.py`` -> [``a/b.py``, ``a/c.py``] (one brace group at a time)."""
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    return [
        x
        for alt in m.group(1).split(",")
        for x in _expand(token[: m.start()] + alt.strip() + token[m.end() :])
    ]


def quoted(doc: str) -> list:
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return QUOTED.findall(f.read())


#: built only with CUDA (``FORCE_CUDA=1 pip install -e .``): named, not importable here
OPTIONAL_EXTENSIONS = {"slifmr_kernels._C"}


def _resolves(name: str) -> bool:
    """``pkg.mod.attr`` names a module file, an importable module, or an attribute chain on one."""
    if name in OPTIONAL_EXTENSIONS:
        return os.path.isdir(os.path.join(ROOT, "csrc"))
    parts = name.split(".")
    if os.path.isfile(os.path.join(ROOT, *parts) + ".py"):
        return True  # e.g. a backend module whose import needs a GPU
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_quoted_paths_exist(doc):
    missing = []
    for token in quoted(doc):
        token = token.rstrip(".,;:)")
        if not token.startswith(TOP) or "<" in token or "*" in token:
            continue  # not a repository path, or a pattern / placeholder
        for path in _expand(token.split("::")[0]):
            # bench/scale.memory_model: a module path and an attribute
            base, ext = os.path.splitext(path)
            if (
                ext
                and not os.path.exists(os.path.join(ROOT, path))
                and os.path.exists(os.path.join(ROOT, base + ".py"))
            ):
                continue
            if not os.path.exists(os.path.join(ROOT, path)):
                missing.append(path)
    assert not missing, f"{doc} names paths that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("doc", DOCS)
def test_quoted_python_names_resolve(doc):
    bad = [
        t
        for t in quoted(doc)
        if re.fullmatch(r"(slifmr|slifmr_kernels)(\.[A-Za-z_]\w*)+", t) and not _resolves(t)
    ]
    assert not bad, f"{doc} names Python objects that do not exist: {sorted(set(bad))}"


def test_the_checks_catch_a_missing_name():
    assert _expand("csrc/{a,b}/x.cu") == ["csrc/a/x.cu", "csrc/b/x.cu"]
    assert _resolves("slifmr.train.Trainer") and _resolves("slifmr_kernels.knn_graph")
    assert not _resolves("slifmr.train.NoSuchThing") and not _resolves("slifmr.no_such_module")
