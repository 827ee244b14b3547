"""Collective helpers for the sharded ops: group info, all-to-all with split sizes, consistency
checks, and one error type for a peer that died or timed out.

Every helper is a collective: all ranks of the group call it in the same order. Only
``all_to_all_single`` (gloo, nccl and mpi all implement it, with split sizes), ``all_reduce``,
``all_gather`` and point-to-point ``isend`` / ``irecv`` are used.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from ..errors import InputError, KernelError

__all__ = [
    "DistributedError",
    "world",
    "guard",
    "all_to_all_v",
    "exchange_counts",
    "check_same",
    "all_gather_ints",
]


class DistributedError(KernelError, RuntimeError):
    """A collective of a sharded op failed: a peer process died, left, or did not reach the
    same collective within the process group's timeout (``init_process_group(timeout=...)``).
    The message names the op, the step and this rank; the backend's own error is chained."""


def world(group=None) -> tuple[int, int]:
    """(rank, world_size) in ``group``; a clear error when no process group is initialised."""
    if not dist.is_available() or not dist.is_initialized():
        raise InputError(
            "slifmr_kernels.distributed needs an initialised default process group "
            "(torch.distributed.init_process_group), even with one process"
        )
    return dist.get_rank(group), dist.get_world_size(group)


@contextlib.contextmanager
def guard(op: str, step: str, group=None):
    """Turn a backend failure inside a collective into a DistributedError naming op and step."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as exc:  # DistBackendError, gloo's "Connection closed by peer", timeouts
        rank = dist.get_rank(group) if dist.is_initialized() else -1
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DistributedError(
            f"{op}: {step} failed on rank {rank}: a peer process died or did not reach the same "
            f"collective within the process group's timeout ({first})"
        ) from exc


def all_to_all_v(
    send: torch.Tensor, send_counts: list[int], recv_counts: list[int], group=None
) -> torch.Tensor:
    """Rows ``send`` split by ``send_counts`` (rows for rank 0, 1, ...) -> the rows every rank
    sent here, concatenated in source-rank order (``recv_counts`` rows from each)."""
    out = send.new_empty((sum(recv_counts),) + tuple(send.shape[1:]))
    if len(send_counts) == 1:
        out.copy_(send)
        return out
    dist.all_to_all_single(
        out,
        send.contiguous(),
        output_split_sizes=list(recv_counts),
        input_split_sizes=list(send_counts),
        group=group,
    )
    return out


def exchange_counts(send_counts: torch.Tensor, group=None) -> torch.Tensor:
    """send_counts[r] = how many items go to rank r -> recv_counts[r] = how many come from r."""
    send_counts = send_counts.to(torch.int64).contiguous()
    if send_counts.numel() == 1:
        return send_counts.clone()
    out = torch.empty_like(send_counts)
    dist.all_to_all_single(out, send_counts, group=group)
    return out


def all_gather_ints(values: list[int], group=None, device="cpu") -> torch.Tensor:
    """(world_size, len(values)) int64: every rank's ``values``."""
    t = torch.tensor(values, dtype=torch.int64, device=device)
    _, p = world(group)
    if p == 1:
        return t[None]
    out = [torch.empty_like(t) for _ in range(p)]
    dist.all_gather(out, t, group=group)
    return torch.stack(out)


def check_same(op: str, group=None, device="cpu", **values: int) -> None:
    """Raise InputError on every rank when an argument that must agree differs across ranks."""
    names = list(values)
    g = all_gather_ints([int(values[n]) for n in names], group, device)
    for c, n in enumerate(names):
        col = g[:, c]
        if bool((col != col[0]).any()):
            raise InputError(f"{op}: {n} must be the same on every rank, got {col.tolist()} (by rank)")
