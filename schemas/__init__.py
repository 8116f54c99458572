"""The contract: every audit table, declared once with documented fields.

`TABLES` maps table name -> TableSpec. Writers, the DuckDB views and `shardguard tables`
all read from here.
"""

from schemas.captions import CAPTION_VARIANTS
from schemas.core import ERRORS, RUNS, SAMPLES, SHARDS
from schemas.declare import TableSpec, column, table
from schemas.dedup import CONTAMINATION, DECISIONS, DUPLICATES
from schemas.embeddings import EMBEDDINGS
from schemas.run_changes import RUN_CHANGES
from schemas.timings import STAGE_TIMINGS
from schemas.perturbations import PERTURBATION_FLAGS, PERTURBATION_SAMPLES, PERTURBATION_TESTS
from schemas.memorization import ATTRIBUTION, MEMORIZATION, MEMORIZATION_RUNS, MEMORIZATION_SCORES, REPLICATION, REPLICATION_SUMMARY

TABLES: dict[str, TableSpec] = {t.name: t for t in (RUNS, SHARDS, SAMPLES, ERRORS, EMBEDDINGS, DUPLICATES, DECISIONS, CONTAMINATION, CAPTION_VARIANTS,
                                                MEMORIZATION_SCORES, MEMORIZATION, MEMORIZATION_RUNS, REPLICATION, REPLICATION_SUMMARY,
                                                ATTRIBUTION, PERTURBATION_SAMPLES, PERTURBATION_FLAGS, PERTURBATION_TESTS, RUN_CHANGES,
                                                STAGE_TIMINGS)}

__all__ = ["TABLES", "TableSpec", "column", "table", "RUNS", "SHARDS", "SAMPLES", "ERRORS", "EMBEDDINGS", "DUPLICATES", "DECISIONS", "CONTAMINATION", "CAPTION_VARIANTS",
           "MEMORIZATION_SCORES", "MEMORIZATION", "MEMORIZATION_RUNS", "REPLICATION", "REPLICATION_SUMMARY", "ATTRIBUTION",
           "PERTURBATION_SAMPLES", "PERTURBATION_FLAGS", "PERTURBATION_TESTS", "RUN_CHANGES",
           "STAGE_TIMINGS"]
