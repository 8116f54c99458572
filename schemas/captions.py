"""Caption variants written by `shardguard clean`: what was changed, how, and from what."""

import pyarrow as pa

from schemas.declare import column, table

CAPTION_VARIANTS = table(
    "caption_variants", "One row per (sample, epoch) whose caption the clean job changed.", 1,
    column("run_id", pa.string(), "Clean run that wrote the variant.", False),
    column("shard", pa.string(), "Source shard of the sample.", False),
    column("key", pa.string(), "Source key of the sample.", False),
    column("clean_key", pa.string(), "Key of the sample in the clean shards."),
    column("epoch", pa.int64(), "Epoch the variant is for (0 = the .txt in the clean shard; later ones in the json)."),
    column("strategy", pa.string(), "MC, RC, RT, CWR or RNA (Somepalli et al. 2023), with its parameters."),
    column("seed", pa.int64(), "Seed of the policy; with key and epoch it reproduces the variant."),
    column("original", pa.string(), "The caption before the change."),
    column("new", pa.string(), "The caption written for training."),
)
