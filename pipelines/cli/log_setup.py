"""The CLI's logging, configured when pipelines.cli is imported, before anything imports Beam.

Importing apache_beam logs a warning about missing GCP client libraries through the root
logger; with no handler yet, that call would configure logging with Python's default format
(and `main`'s own configuration would then do nothing) and print the warning on every command.
So pipelines/cli/__init__.py calls `configure` before it imports main: WARNING level,
'LEVEL logger: message' on stderr, that one warning dropped. `configure` is idempotent;
`main` calls it again for callers that configured nothing in between.
"""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"


class DropBeamImportNoise(logging.Filter):
    """Beam warns about missing GCP client libraries on import; irrelevant to local runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def configure() -> None:
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    root = logging.getLogger()
    if not any(isinstance(f, DropBeamImportNoise) for f in root.filters):
        root.addFilter(DropBeamImportNoise())

