"""Ingestion: load a model, build a task, compute edges (pure), and write runs into the store.

Four sub-packages whose imports run one way (checked by ``make lint``)::

    model  <-  edges  <-  toolbox  <-  jobs

- :mod:`ingest.model`: loading (zoo, files, Hugging Face folders, hub names), hooks, the component
  graph, tasks and sparse dictionaries;
- :mod:`ingest.edges`: the edge methods behind one registry (:mod:`ingest.edges.registry`), the
  model interface they are written against, interventions and sharding;
- :mod:`ingest.toolbox`: the studies' pure computations (lens, decoding, coding, gain, ...);
- :mod:`ingest.jobs`: the only part that touches the store.
"""
