"""Questions asked of the connectome: thin Cypher fetches (parameters only) plus pure analysis."""
