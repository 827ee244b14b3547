"""Fused heterogeneous propagation Y = sum_r w_r * A_r (X * E_r); see op.py."""
