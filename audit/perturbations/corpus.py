"""The perturbation audit's inputs, read from an output folder: labels, tested samples, images.

Input: an OutputDir after ingest (and embeddings, for pseudo-labels) and a PerturbationConfig.
Output: `LabelledCorpus` (every ok sample with a label, where its label came from and the
embeddings), the stratified sample that is tested, the reference shards' sample, `ImageSet`s
with the decoded images, and the per-sample feature table. Failure: `NoLabels` (with the
reason) when neither the metadata field nor an image embedding model gives classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.dedup.corpus import load_corpus
from audit.report.finding_pages import read_training_images
from audit.io.output_dir import OutputDir
from audit.perturbations.perturbation_audit import ImageSet, PerturbationConfig, subsample
from audit.io.store import scan


class NoLabels(ValueError):
    pass


@dataclass
class LabelledCorpus:
    shard: np.ndarray
    key: np.ndarray
    label: np.ndarray                  # class id per sample
    names: list[str]                   # class id -> label text
    source: str                        # 'metadata:<field>' or 'kmeans:<model>:k=<k>'
    embeddings: np.ndarray | None      # aligned with the samples, or None

    def __len__(self) -> int:
        return len(self.key)


def image_vectors(out: OutputDir, cfg: PerturbationConfig) -> tuple[str, dict[tuple[str, str], np.ndarray]]:
    """(model id, (shard, key) -> vector) of the configured (or first) image embedding model."""
    corpus = load_corpus(out)
    models = sorted(m for m, (mod, _, _) in corpus.vectors.items()
                    if mod == "image" and m.startswith(cfg.embedding_model))
    if not models:
        return "", {}
    _, rows, x = corpus.vectors[models[0]]
    return models[0], {(corpus.shard[r], corpus.key[r]): v for r, v in zip(rows, x)}


def kmeans_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False, spherical=True)
    km.train(np.ascontiguousarray(x, np.float32))
    return km.index.search(np.ascontiguousarray(x, np.float32), 1)[1][:, 0].astype(np.int64)


def labelled_corpus(out: OutputDir, cfg: PerturbationConfig) -> LabelledCorpus:
    model, vectors = image_vectors(out, cfg)
    if cfg.label_field:
        rows = scan(f"SELECT shard, key, json_extract_string(meta_json, '$.' || ?) AS label "
                    f"FROM {out.read_sql('samples')} WHERE status = 'ok' ORDER BY shard, key", [cfg.label_field])
        rows = [r for r in rows if r["label"] not in (None, "")]
        if not rows:
            raise NoLabels(f"no ok sample has the metadata field {cfg.label_field!r}")
        names = sorted({r["label"] for r in rows})
        ids = {n: i for i, n in enumerate(names)}
        label = np.array([ids[r["label"]] for r in rows], np.int64)
        source = f"metadata:{cfg.label_field}"
    else:
        if not vectors:
            if not model and not _has_ok_samples(out):
                raise NoLabels("tests skipped: no ok samples")
            raise NoLabels("no labels: set perturbations.label_field, or enable an image embedding model "
                           "for k-means pseudo-labels")
        rows = [{"shard": s, "key": k} for s, k in sorted(vectors)]
        if len(rows) < 2:
            raise NoLabels(f"tests skipped: k-means pseudo-labels need at least 2 samples with {model} vectors, "
                           f"{len(rows)} has them")
        k = int(min(cfg.clusters, max(2, len(rows) // 20)))
        label = kmeans_labels(np.stack([vectors[(r["shard"], r["key"])] for r in rows]), k, cfg.seed)
        names = [f"cluster-{i}" for i in range(k)]
        source = f"kmeans:{model}:k={k}"
    dropped = dropped_duplicates(out)
    rows_keep = [i for i, r in enumerate(rows) if (r["shard"], r["key"]) not in dropped]
    rows, label = [rows[i] for i in rows_keep], label[rows_keep]
    emb = None
    if vectors and all((r["shard"], r["key"]) in vectors for r in rows):
        emb = np.stack([vectors[(r["shard"], r["key"])] for r in rows]).astype(np.float32)
    return LabelledCorpus(np.array([r["shard"] for r in rows]), np.array([r["key"] for r in rows]),
                          label, names, source, emb)


def _has_ok_samples(out: OutputDir) -> bool:
    if not any(out.table_dir("samples").glob("run=*/*.parquet")):
        return False
    return bool(scan(f"SELECT count(*) AS n FROM {out.read_sql('samples')} WHERE status = 'ok'")[0]["n"])


def dropped_duplicates(out: OutputDir) -> set[tuple[str, str]]:
    """Samples the latest decisions drop as duplicates: repeats would make class templates
    and probe accuracies out of copies, not perturbations."""
    if not any(out.table_dir("decisions").glob("run=*/*.parquet")):
        return set()
    dec = out.read_sql("decisions")
    rows = scan(f"SELECT shard, key FROM {dec} WHERE run_id = (SELECT max(run_id) FROM {dec}) AND NOT keep "
                f"AND len(list_filter(reasons, lambda x: x LIKE '%duplicate%')) > 0")
    return {(r["shard"], r["key"]) for r in rows}


def stratified(labels: np.ndarray, idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to n of `idx`, stratified by class (audit.perturbations.perturbation_audit.subsample), seeded."""
    return np.sort(idx) if len(idx) <= n else np.sort(idx[subsample(labels[idx], n, seed)])


def split(corpus: LabelledCorpus, cfg: PerturbationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(tested rows, reference rows): reference shards are never tested as data."""
    is_ref = np.isin(corpus.shard, list(cfg.reference_shards))
    data = stratified(corpus.label, np.flatnonzero(~is_ref), cfg.max_samples, cfg.seed)
    ref = stratified(corpus.label, np.flatnonzero(is_ref), cfg.max_samples, cfg.seed + 7)
    return data, ref


def image_set(out: OutputDir, corpus: LabelledCorpus, rows: np.ndarray, opener) -> tuple[ImageSet, np.ndarray]:
    """Decoded images of `rows` (those that no longer decode are left out: returned rows say
    which were kept)."""
    images = read_training_images(out, [(corpus.shard[i], corpus.key[i]) for i in rows], opener)
    kept = np.array([i for i in rows if (corpus.shard[i], corpus.key[i]) in images], np.int64)
    arrays = [np.asarray(images[(corpus.shard[i], corpus.key[i])].convert("RGB")) for i in kept]
    emb = corpus.embeddings[kept] if corpus.embeddings is not None else None
    return ImageSet(arrays, corpus.label[kept], emb, pseudo=corpus.source.startswith("kmeans")), kept


def feature_table(out: OutputDir, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The latest perturbation_samples row per sample: shard, key and the scalar features."""
    if not any(out.table_dir("perturbation_samples").glob("run=*/*.parquet")):
        return {}
    cols = ", ".join(columns)
    rows = scan(f"SELECT shard, key, {cols} FROM {out.read_sql('perturbation_samples')} "
                f"QUALIFY row_number() OVER (PARTITION BY shard, key ORDER BY run_id DESC) = 1 ORDER BY shard, key")
    table = {c: np.array([r[c] for r in rows], dtype=object if c in ("shard", "key") else np.float64)
             for c in ("shard", "key", *columns)}
    return table
