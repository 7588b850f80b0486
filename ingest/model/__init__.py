"""The model side of ingestion: loading (zoo, files, Hugging Face folders, hub names), hook names,
the component graph, tasks and sparse dictionaries. Imports nothing from the other sub-packages."""
