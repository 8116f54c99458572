"""The clean job's rules: img2dataset-format output shards, the append-only ledger of a clean
destination, the per-image re-encoders (sanitizer, deconvolution), and which `clean --to` folders we
may write.
"""
