"""Ingestion: load a model, build a task, compute edges (pure), and write runs into the store.

``ingest.methods`` computes edge frames from tensors without I/O; ``ingest.jobs`` is the one place
where torch meets the store.
"""
