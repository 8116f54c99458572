"""Embeddings: the Embedder interface, the `embed:` config, which models run and how they load (SSCD,
open_clip, MiniLM captions), image tensors on the device, and one shard through every model.
"""
