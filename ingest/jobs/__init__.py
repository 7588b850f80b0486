"""Jobs: the only part of ingestion that touches the store (ingestion runs, studies, evaluation)."""
