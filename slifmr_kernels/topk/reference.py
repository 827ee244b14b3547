"""Pure-torch reference of the top-k kernel: the definition of correct.

Blocked over rows of x so that memory is O(N·k + block·M), never N×M: each block of rows is
scored against all of y, masked, and ranked with a *stable* descending sort, so equal scores
keep ascending column order (ties broken by the lower index, as every backend must).
"""

from __future__ import annotations

import torch

_BLOCK_ELEMS = 1 << 22  # scores per block (16 MiB in fp32)


def topk(x, y, k, exclude_self, excl_indptr, excl_indices):
    """(N, k) int64 indices and (N, k) scores of the k largest <x[i], y[j]> per row.

    Disallowed candidates (j == i with exclude_self; the CSR exclusion list of row i) never
    appear; rows with fewer than k allowed candidates are padded with index -1 and score -inf.
    """
    n, m = x.shape[0], y.shape[0]
    idx_out = torch.full((n, k), -1, dtype=torch.int64, device=x.device)
    val_out = torch.full((n, k), float("-inf"), dtype=x.dtype, device=x.device)
    if n == 0 or m == 0 or k == 0:
        return idx_out, val_out
    block = max(1, min(n, _BLOCK_ELEMS // m))
    cols = torch.arange(m, device=x.device)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        scores = x[r0:r1] @ y.T
        allowed = torch.ones_like(scores, dtype=torch.bool)
        if exclude_self:
            rows = torch.arange(r0, r1, device=x.device)
            in_range = rows < m
            allowed[in_range.nonzero().squeeze(1), rows[in_range]] = False
        if excl_indptr is not None:
            a, b = int(excl_indptr[r0]), int(excl_indptr[r1])
            counts = excl_indptr[r0 + 1 : r1 + 1] - excl_indptr[r0:r1]
            local_rows = torch.repeat_interleave(torch.arange(r1 - r0, device=x.device), counts)
            allowed[local_rows, excl_indices[a:b].long()] = False
        scores = scores.masked_fill(~allowed, float("-inf"))
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        top_val = torch.gather(scores, 1, order)
        top_ok = torch.gather(allowed, 1, order)
        kk = order.shape[1]
        idx_out[r0:r1, :kk] = torch.where(top_ok, cols[order], torch.full_like(order, -1))
        val_out[r0:r1, :kk] = torch.where(top_ok, top_val, torch.full_like(top_val, float("-inf")))
    return idx_out, val_out
