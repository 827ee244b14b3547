"""Batched top-k similarity: kNN graphs and masked full ranking; see op.py."""
