"""The atlas's exception tree.

Every error a user can cause is an :class:`AtlasError`; the CLI prints its message as one line on
stderr and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AtlasError",
    "ValidationError",
    "ConfigError",
    "ModelError",
    "TaskError",
    "StoreError",
    "StoreUnavailable",
    "StoreAuthError",
    "QueryError",
    "ReadOnlyViolation",
    "RunNotFound",
    "RunConflict",
    "ComponentNotFound",
    "NoPath",
]


class AtlasError(Exception):
    """Base of every error caused by input, configuration or the environment, not by a bug."""


class ValidationError(AtlasError, ValueError):
    """A frame, id or argument does not meet its contract."""


class ConfigError(AtlasError):
    """Settings (environment, flags, atlas home) are inconsistent or unusable."""


class ModelError(AtlasError):
    """A model cannot be found, loaded or is of an unsupported kind."""


class TaskError(AtlasError):
    """A task is unknown, or its prompts do not fit the model."""


class StoreError(AtlasError):
    """The graph database said no (the server answered with an error)."""


class StoreUnavailable(StoreError):
    """The graph database could not be reached at all (driver-side failure)."""


class StoreAuthError(StoreError):
    """The graph database refused the credentials."""


class QueryError(StoreError):
    """A Cypher statement is malformed or failed on the server."""


class ReadOnlyViolation(QueryError):
    """A statement sent as read-only tried to write."""


class RunNotFound(AtlasError):
    """No run with the given id exists in the store."""


class RunConflict(AtlasError):
    """A run id is already taken by a run with a different configuration."""


class ComponentNotFound(AtlasError):
    """A component id names nothing in the model or the store."""


class NoPath(AtlasError):
    """No path connects the requested components."""
