"""User-facing errors: one line naming the file and the problem."""
from __future__ import annotations


class SewerbenchError(Exception):
    """An error caused by the user's input or configuration.

    The CLI prints ``sewerbench: error: <message>`` and exits non-zero without a traceback.
    Messages must be one line and should name the file (and row/column) at fault.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
