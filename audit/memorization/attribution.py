"""Data attribution of generated images with self-supervised features: which training images
explain a model output?

The minimalist baseline of data attribution (feature similarity in a self-supervised backbone,
as in Wang et al., "Evaluating Data Attribution for Text-to-Image Models", ICCV 2023; the
issue's source papers find it explains a model output about as well as costly ensembles): rank
the training images by the cosine between their features (SSCD, or CLIP's image tower) and the
query's. The training side is the vectors the audit already stored (OUT/vectors,
audit.dedup.corpus); only the queries are embedded, with the same model id.

Input: generated images (audit.memorization.replication.read_generated: a folder with optional
same-name .txt prompts, a tar, or a glob of tars), the training set's `TrainIndex`
(replication.image_index), an embedder of the same model (`query_embedder`), k.
Output: per query its k most similar training images, rank 1..k (rows of
schemas.memorization.ATTRIBUTION, without run_id). `score_quantiles` summarizes top-1 scores.
Failure rows: a query that was not read (over the byte limit), that does not decode, or that
ingest's guards reject (bombs, geometry) is ONE row with `error` set and no rank, never a crash.
`query_embedder` raises UsageError when the stored vectors cannot be reproduced (a CLIP
checkpoint that is not the one the audit used, or random-init test weights).
"""

from __future__ import annotations

import numpy as np

from audit.dedup.vector_index import IndexConfig, torch_topk
from audit.io.user_errors import UsageError
from audit.memorization.replication import Generated, TrainIndex, embed_chunks, sscd_embedder

FAMILIES = ("sscd", "clip")


def clip_image_embedder(model_id: str, checkpoint: str | None):
    """CLIP's image embedder for a stored model id 'clip:<model name>:<weights tag>:image'."""
    from audit.embeddings.clip_models import OpenClip, checkpoint_tag  # open_clip, torch
    name, tag, modality = model_id.split(":", 1)[1].rsplit(":", 2)
    if modality != "image":
        raise ValueError(f"not a CLIP image model id: {model_id!r}")
    if tag == "random-init":
        raise UsageError(f"the audit's CLIP vectors ({model_id}) come from random test weights; no query "
                         "embedding can reproduce them: audit with a real CLIP checkpoint, or use --model sscd")
    if tag.startswith("ckpt-"):
        if not checkpoint:
            raise UsageError(f"the audit's CLIP vectors came from the checkpoint {tag} ({model_id}): "
                             "pass that file as --clip-checkpoint PATH")
        mine = checkpoint_tag(checkpoint)
        if mine != tag:
            raise UsageError(f"--clip-checkpoint {checkpoint} is {mine}, but the audit's CLIP vectors came from "
                             f"{tag}: pass the checkpoint the audit used")
        return OpenClip(name, checkpoint=checkpoint).image
    return OpenClip(name, pretrained=tag).image


def query_embedder(model_id: str, sscd_torchscript: str | None = None, clip_checkpoint: str | None = None):
    """An embedder that computes the same image vectors as the training run did for model_id."""
    if model_id.startswith("clip:"):
        return clip_image_embedder(model_id, clip_checkpoint)
    return sscd_embedder(model_id, sscd_torchscript)


def attribute(items: list[Generated], index: TrainIndex, embedder, k: int, batch: int = 64,
              cfg: IndexConfig = IndexConfig()) -> list[dict]:
    """k rows per embedded query (rank 1 = most similar), one error row per other query."""
    if len(index.keys) == 0:
        raise ValueError("attribution needs a training index with at least one vector")
    k = max(1, min(k, len(index.keys)))
    rows = []
    for chunk, vec_of, err_of in embed_chunks(items, embedder, batch):
        have = sorted(vec_of)
        sims, ids = torch_topk(np.stack([vec_of[i] for i in have]), index.vectors, k, cfg) if have else ([], [])
        found = dict(zip(have, zip(sims, ids)))
        for i, g in enumerate(chunk):
            base = {"query": g.name, "prompt": g.prompt, "model": index.model_id}
            if i not in found:
                rows.append({**base, "error": g.error or err_of.get(i) or "not embedded"})
                continue
            for rank, (s, b) in enumerate(zip(*found[i]), start=1):
                rows.append({**base, "rank": rank, "shard": index.shards[b], "key": index.keys[b],
                             "score": float(s), "error": None})
    return rows


def top1_scores(rows: list[dict]) -> dict[str, float]:
    """query -> its rank-1 score."""
    return {r["query"]: r["score"] for r in rows if r.get("rank") == 1}


def score_quantiles(scores, qs=(0.1, 0.5, 0.9)) -> dict:
    """n, mean and the given quantiles of a list of scores (None when empty)."""
    s = np.asarray(list(scores), float)
    if len(s) == 0:
        return {"n": 0, "mean": None, **{f"p{round(q * 100)}": None for q in qs}}
    return {"n": int(len(s)), "mean": float(s.mean()), **{f"p{round(q * 100)}": float(np.quantile(s, q)) for q in qs}}
