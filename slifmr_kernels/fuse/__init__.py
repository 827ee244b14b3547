"""The fuse_views op: z + sum_k alpha[k] * normalize(v_k), row by row (see ``op.py``)."""
