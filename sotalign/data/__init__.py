"""Embedding store and benchmark data."""
