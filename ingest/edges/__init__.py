"""Edges: the attribution and patching methods behind one registry (:mod:`ingest.edges.registry`),
written once against the model interface (:mod:`ingest.edges.interface`), plus interventions
(lesions, path patching) and sharding. Imports :mod:`ingest.model` only."""
