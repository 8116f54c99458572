"""The HTML report: escaped self-contained building blocks, the memorization and replication finding
pages, the report's sections and charts, and `write_report` (OUT/reports/index.html).
"""
