"""The one error of the local stack's tooling."""


class StackError(RuntimeError):
    """The stack could not be started, stopped or read; the message says why and what to do."""
