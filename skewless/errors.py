"""Errors Skewless raises on purpose: each names what is wrong and what to do."""


class SkewlessError(Exception):
    """Base class: the message is meant for a person and fits on one line."""


class ServiceUnavailable(SkewlessError):
    """A configured PostgreSQL or Redis server cannot be reached."""


class DefinitionError(SkewlessError):
    """A feature view or feature reference is malformed or unknown."""


class DataError(SkewlessError):
    """Input data does not have the shape or types a step needs."""


class StaleValueError(DataError):
    """An online read met a stale value of a view whose stale policy is `error`."""


class FeatureReferenceError(DefinitionError, DataError):
    """An argument names a view, feature or service the registry does not have: a wrong
    definition as much as wrong input, so either `except` catches it."""


class OnDemandError(SkewlessError):
    """An on-demand view's function raised, or returned outputs that do not fit its declaration:
    a fault of the function, not of the request."""
