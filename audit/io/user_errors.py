"""The one exception class for errors a user can cause and fix (CLI exit code 2).

Raise `UsageError` with one line that names the file, flag or config key and says what to do;
`pipelines.cli.dispatch` prints `error: <line>` (no traceback) and exits 2. It subclasses
ValueError so code that already catches ValueError keeps working. Importable without Beam
or torch.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad flag, config value, input or folder: the message is one line naming it and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the caller put in it
