"""How the package's ops are registered with the torch dispatcher (namespace ``slifmr``).

Every op (``torch.ops.slifmr.propagate`` etc.) is defined here with the public low-level
``torch.library`` API instead of the ``torch.library.custom_op`` decorator. The result is
the same operator: the schema is inferred from the Python signature as ``custom_op`` infers
it, it carries the ``pt2_compliant_tag``, it has a fake (meta) kernel for tracing and
``torch.compile``, and an autograd kernel built by ``torch.library.register_autograd`` (the
same ``autograd.Function`` machinery ``custom_op`` uses). One thing differs, the reason this
module exists: ``custom_op`` wraps the kernel in ``torch._disable_dynamo``, which imports
``torch._dynamo`` (and with it sympy, the FX symbolic-shape machinery, parts of
``torch.distributed``, ...) on the first call of any such op. That import took 1.5 to 3 s,
most of the first ``sk.propagate`` call of a fresh process, in programs that never compile
anything. Here the kernel is wrapped in ``torch.compiler.disable`` only once ``torch._dynamo``
is loaded: before that no compiled frame can be running, and disabling Dynamo around the
kernel would change nothing (docs/PORTING.md, "Start-up cost").
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import torch

__all__ = ["define_op", "NAMESPACE"]

NAMESPACE = "slifmr"

# One library fragment holds every definition; it must stay referenced, or the dispatcher
# drops its registrations.
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")


def _dynamo_disabled_when_loaded(fn: Callable) -> Callable:
    """``fn`` as a dispatcher kernel: called as is while ``torch._dynamo`` is not imported,
    through ``torch.compiler.disable(fn)`` after. Dynamo then never traces into the kernel's
    Python (the backend modules, Numba dispatchers) when the op runs inside a compiled region,
    as for an op made by ``torch.library.custom_op``."""
    disabled: list[Callable] = []

    @functools.wraps(fn)
    def kernel(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:  # a race only builds the same wrapper twice
            disabled.append(torch.compiler.disable(fn, recursive=True))
        return disabled[0](*args, **kwargs)

    return kernel


def _no_derivative(qualname: str) -> Callable:
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{qualname} has no derivative: its outputs are indices, detached scores or "
            f"gradients, and differentiating through it (e.g. a double backward through "
            f"slifmr_kernels ops) is not supported"
        )

    return backward


def define_op(
    name: str,
    fn: Callable,
    fake: Callable,
    backward: Callable | None = None,
    setup_context: Callable | None = None,
) -> torch._ops.OpOverload:
    """Define ``slifmr::<name>`` with ``fn`` as its kernel (for every device) and return the
    operator (``torch.ops.slifmr.<name>.default``), which ``torch.library.opcheck``,
    ``torch.compile`` and ``torch.export`` accept.

    Args:
        name: the op's name in the ``slifmr`` namespace.
        fn: the kernel; its type annotations give the schema (``torch.library.infer_schema``,
            no argument mutated).
        fake: the fake kernel: output tensors of the right shapes, dtypes and devices.
        backward, setup_context: the autograd formula, as for
            ``torch.library.register_autograd``. Without one, backpropagating through the op
            raises a RuntimeError that names it (as an op made by ``custom_op`` without a
            formula does) instead of silently giving no gradient.
    """
    qualname = f"{NAMESPACE}::{name}"
    schema = torch.library.infer_schema(fn, mutates_args=())
    _LIB.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
    _LIB.impl(name, _dynamo_disabled_when_loaded(fn), "CompositeExplicitAutograd")
    torch.library.register_fake(qualname, fake, lib=_LIB)
    torch.library.register_autograd(
        qualname, backward or _no_derivative(qualname), setup_context=setup_context, lib=_LIB
    )
    return getattr(getattr(torch.ops, NAMESPACE), name).default
