"""Deduplication: vector search (exact, faiss IVF, partitioned), copy detection's one rule, streamed
union-find clusters and the keep policy (duplicates and decisions rows), incremental dedup against
the accepted corpus, and eval-set contamination.
"""
