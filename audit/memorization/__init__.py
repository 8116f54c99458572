"""Memorization and replication: diffusers checkpoints and guided DDIM sampling, Wen et al.'s d per
pair or prompt, one shard's scores, thresholds from reference scores, corpus flags and trigger
tokens, the training-time filter, detection metrics, and generated-vs-training replication (SSCD
top-1).
"""
