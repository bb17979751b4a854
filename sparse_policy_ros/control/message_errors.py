"""
One error type for bad incoming messages: what field, what was expected, what came.

Callbacks catch ``MessageError``, log ``str(error)`` (throttled) and count ``error.kind`` in
diagnostics, so one malformed message never stops a node.
"""

from typing import Any


class MessageError(ValueError):
    """A message field does not match what the node can use."""

    def __init__(self, kind: str, field: str, expected: Any, got: Any):
        """Record the counter ``kind`` and the offending ``field`` with expected and actual."""
        self.kind = kind
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f'{field}: expected {expected}, got {got}')
