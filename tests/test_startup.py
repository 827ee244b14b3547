"""Start-up cost, checked by mechanism rather than by the clock (docs/PORTING.md, "Start-up
cost"): a fresh process that imports slifmr_kernels and runs the ops eagerly must not import
the compiler stack (``torch._dynamo`` and what it pulls in: inductor, sympy, triton), which
cost 1.5 to 3 s on the first op call; only ``torch.compile`` may bring it in, and the ops must
still work under it afterwards. Each check runs in a new interpreter, since this one has
long imported everything."""

import json
import os
import subprocess
import sys

import pytest
import torch

#: Imported only when something compiles (or, for triton, when its backend is selected).
COMPILER_STACK = ("torch._dynamo", "torch._inductor", "sympy", "triton")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter (SLIFMR_BACKEND unset, so ``auto`` picks as a user's
    script would); it ends by printing one JSON object, returned here."""
    env = {k: v for k, v in os.environ.items() if k != "SLIFMR_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


_LOADED = (
    "json.dumps({'loaded': [m for m in "
    + repr((*COMPILER_STACK, "numba"))
    + " if m in sys.modules], 'backend': slifmr_kernels.last_backend()})"
)


def test_import_loads_neither_the_compiler_stack_nor_a_backend():
    got = _fresh("import sys, json, slifmr_kernels\nprint(" + _LOADED + ")")
    assert got["loaded"] == []


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_first_eager_calls_do_not_import_the_compiler_stack(backend):
    """Every op once, forward and backward, as a script would at its start."""
    code = f"""
import sys, json, torch, slifmr_kernels
import slifmr_kernels as sk
b = {backend!r}
gen = torch.Generator().manual_seed(0)
g = sk.CSRGraph.from_edges(torch.randint(0, 50, (300,), generator=gen),
                           torch.randint(0, 50, (300,), generator=gen), shape=(50, 50))
x = torch.randn(50, 8, generator=gen, requires_grad=True)
sk.propagate_layers(g, x, 2, backend=b).sum().backward()
sk.topk_similarity(x.detach(), 3, backend=b)
alpha = torch.ones(2, requires_grad=True)
sk.fuse_views(x, alpha, torch.randn(50, 16, generator=gen), backend=b).sum().backward()
print({_LOADED})
"""
    got = _fresh(code)
    assert not set(got["loaded"]) & set(COMPILER_STACK), got


def test_ops_work_under_torch_compile_after_eager_calls():
    """The kernels run as they are until torch._dynamo is imported and behind
    torch.compiler.disable after: eager, then compiled, then eager again give the same bits."""
    code = """
import sys, json, torch
import slifmr_kernels as sk
gen = torch.Generator().manual_seed(0)
g = sk.CSRGraph.from_edges(torch.randint(0, 40, (200,), generator=gen),
                           torch.randint(0, 40, (200,), generator=gen), shape=(40, 40))
x = torch.randn(40, 4, generator=gen)
before = sk.propagate_layers(g, x, 2, backend="torch")
assert "torch._dynamo" not in sys.modules
f = torch.compile(lambda x: sk.propagate_layers(g, x, 2, backend="torch"), backend="eager",
                  fullgraph=True)
compiled = f(x)
after = sk.propagate_layers(g, x, 2, backend="torch")
print(json.dumps({"same": bool(torch.equal(before, compiled) and torch.equal(before, after)),
                  "dynamo": "torch._dynamo" in sys.modules}))
"""
    got = _fresh(code)
    assert got == {"same": True, "dynamo": True}


def test_backprop_through_an_op_without_a_formula_names_it():
    """The ops without an autograd formula (top-k, the backward ops) refuse to backpropagate
    with an error instead of giving no gradient."""
    import slifmr_kernels  # noqa: F401  (registers the ops)

    x = torch.randn(6, 3, requires_grad=True)
    idx, val = torch.ops.slifmr.topk(x, x, 2, True, None, None, "torch")
    with pytest.raises(RuntimeError, match="slifmr::topk has no derivative"):
        val.sum().backward()
