"""Incremental kNN refresh (NN-descent seeded by the previous graph); see op.py."""
