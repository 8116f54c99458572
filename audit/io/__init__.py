"""Files, folders and the table store: atomic writes, the output-folder layout and its completion
markers, which folders we may write, user errors, SQL literals, the DuckDB views over every table,
and shard reads that retry transient I/O errors. Imports nothing else from audit/.
"""
