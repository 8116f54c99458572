"""Ingest and the per-shard stage model: webdataset tars read safely, images decoded under limits, one
raw sample validated into one samples row (and errors row), one shard into all its rows with counts
that reconcile; the stored samples and image bytes read back by offset; the stage interface and the
runner that feeds one read and one decode per sample to every per-shard stage.
"""
