"""The whole corpus in memory for dedup: every sample row, and each model's vectors.

Input: an output folder (OutputDir) after ingest and embedding.
Output: `Corpus`, arrays aligned by sample (ordered by shard, key), and per embedding model
(rows into the corpus, float32 matrix), read from the contiguous OUT/vectors/<model>/<shard>.npy
files with the row order recorded in the embeddings table.
Failure: `FileNotFoundError` when nothing was ingested into the folder yet.
Memory: 1M samples with a 512-d model is 2 GB of float32; beyond one machine use the
partitioned mode (audit.dedup.partitioned), which never holds all vectors in one place.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow.parquet as pq

from audit.io import sql_literals
from audit.io.output_dir import OutputDir

SAMPLE_COLUMNS = ("shard", "key", "status", "error", "caption", "byte_hash", "pixel_hash",
                  "width", "height", "image_bytes")


@dataclass
class Corpus:
    shard: np.ndarray
    key: np.ndarray
    status: np.ndarray
    error: np.ndarray
    caption: np.ndarray
    byte_hash: np.ndarray
    pixel_hash: np.ndarray
    width: np.ndarray
    height: np.ndarray
    image_bytes: np.ndarray
    # model id -> (modality, corpus rows, float32 [len(rows), dim])
    vectors: dict[str, tuple[str, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.key)

    def matrix(self, model_prefix: str, modality: str) -> tuple[str, np.ndarray, np.ndarray] | None:
        """(model id, rows, vectors) of the first model whose id starts with the prefix."""
        for model_id, (mod, rows, x) in sorted(self.vectors.items()):
            if model_id.startswith(model_prefix) and mod == modality and len(rows):
                return model_id, rows, x
        return None

    def subset(self, mask: np.ndarray) -> "Corpus":
        """The samples where mask is true, vectors included (rows renumbered)."""
        new_row = np.cumsum(mask) - 1
        arrays = {c: getattr(self, c)[mask] for c in SAMPLE_COLUMNS}
        vectors = {}
        for model, (modality, rows, x) in self.vectors.items():
            keep = mask[rows]
            vectors[model] = (modality, new_row[rows[keep]], x[keep])
        return Corpus(**arrays, vectors=vectors)

    def row_index(self) -> dict[tuple[str, str], int]:
        """(shard, key) -> row, for ok samples."""
        return {(s, k): i for i, (s, k) in enumerate(zip(self.shard, self.key)) if self.status[i] == "ok"}

    def clip_scores(self) -> np.ndarray | None:
        """CLIP image-caption cosine per sample (-inf where missing), for the keep policy."""
        img, txt = self.matrix("clip:", "image"), self.matrix("clip:", "text")
        if img is None or txt is None:
            return None
        score = np.full(len(self), -np.inf)
        t = np.full((len(self), txt[2].shape[1]), np.nan, np.float32)
        t[txt[1]] = txt[2]
        s = np.sum(img[2] * t[img[1]], axis=1)
        score[img[1]] = np.where(np.isnan(s), -np.inf, s)
        return score


def model_dirs(out: OutputDir) -> list:
    return sorted(p for p in out.table_dir("embeddings").glob("*") if p.is_dir())


def shard_vectors(out: OutputDir, model_dir, shard: str) -> tuple[str, str, list[str], np.ndarray]:
    """(model id, modality, keys, float32 vectors) of one shard for one model."""
    files = sorted(model_dir.glob(f"run=*/{shard}.parquet"))
    if not files:
        return "", "", [], np.zeros((0, 0), np.float32)
    t = pq.read_table(files[-1], columns=["model", "modality", "key", "row"])
    m = np.load(out.root / "vectors" / model_dir.name / f"{shard}.npy")
    rows = t.column("row").to_numpy()
    model = t.column("model")[0].as_py() if t.num_rows else ""
    modality = t.column("modality")[0].as_py() if t.num_rows else ""
    return model, modality, t.column("key").to_pylist(), m[rows].astype(np.float32)


def load_corpus(out: OutputDir, with_vectors: bool = True, vector_shards: set[str] | None = None) -> Corpus:
    """Every sample's metadata; vectors of every model (only of `vector_shards` when given)."""
    if not any(out.table_dir("samples").glob("run=*/*.parquet")):
        raise FileNotFoundError(f"nothing ingested in {out.root}: run the ingest first")
    con = duckdb.connect()
    cols = ", ".join(SAMPLE_COLUMNS)
    t = con.sql(f"SELECT {cols} FROM {out.read_sql('samples')} ORDER BY shard, key").to_arrow_table()
    arrays = {c: t.column(c).to_numpy(zero_copy_only=False) for c in SAMPLE_COLUMNS}
    for c in ("width", "height", "image_bytes"):
        arrays[c] = np.nan_to_num(arrays[c].astype(np.float64), nan=0).astype(np.int64)
    corpus = Corpus(**arrays)
    if not with_vectors:
        con.close()
        return corpus
    index = corpus.row_index()
    for model_dir in model_dirs(out):
        files = out.written_files(f"embeddings/{model_dir.name}")
        rows = con.execute(f"SELECT model, modality, shard, key, row FROM {sql_literals.read_parquet(files)} "
                           "ORDER BY shard, row").fetchall() if files else []
        if not rows:
            continue
        model_id, modality = rows[0][0], rows[0][1]
        vecs, where = [], []
        for shard, group in itertools.groupby(rows, key=lambda r: r[2]):
            if vector_shards is not None and shard not in vector_shards:
                continue
            group = [(index.get((shard, r[3])), r[4]) for r in group]
            group = [(i, row) for i, row in group if i is not None]
            if group:
                m = np.load(out.root / "vectors" / model_dir.name / f"{shard}.npy")
                where.extend(i for i, _ in group)
                vecs.append(m[[row for _, row in group]].astype(np.float32))
        if where:
            corpus.vectors[model_id] = (modality, np.array(where, np.int64), np.concatenate(vecs))
    con.close()
    return corpus
