"""Embeddings: one row per (sample, model); vectors ready to join samples on (shard, key).

Files: OUT/embeddings/<model-slug>/run=<run_id>/<shard>.parquet, where `vector` is written as
fixed_size_list<float16>[dim] for that model (DuckDB reads it as FLOAT[]), and beside them the
same vectors as contiguous arrays for faiss: OUT/vectors/<model-slug>/<shard>.npy (float16
[n, dim]) and <shard>.fbin (int32 n, int32 dim, float32 data), rows in Parquet row order.
"""

import pyarrow as pa

from schemas.declare import TableSpec, column, table

EMBEDDINGS = table(
    "embeddings", "One row per (sample, model): an L2-normalized embedding vector.", 1,
    column("run_id", pa.string(), "Run that computed the vector.", False),
    column("shard", pa.string(), "Shard id of the sample.", False),
    column("key", pa.string(), "Sample key; joins samples on (shard, key).", False),
    column("model", pa.string(), "Model id, e.g. 'sscd:sscd_distilled:onnx:320' or 'clip:ViT-B-32:ckpt-…:image'.", False),
    column("modality", pa.string(), "'image' (from the image) or 'text' (from the caption).", False),
    column("row", pa.int64(), "Row of this vector in the shard's .npy/.fbin file.", False),
    column("norm", pa.float32(), "L2 norm of the raw model output before normalization."),
    column("vector", pa.list_(pa.float16()), "The L2-normalized vector, float16 (fixed-size per model in the files)."),
)


def with_dim(spec: TableSpec, dim: int) -> TableSpec:
    """The embeddings schema with `vector` as fixed_size_list<float16>[dim] for one model."""
    i = spec.schema.get_field_index("vector")
    f = spec.schema.field(i)
    schema = spec.schema.set(i, pa.field(f.name, pa.list_(pa.float16(), dim), f.nullable, f.metadata))
    return TableSpec(spec.name, spec.doc, schema, spec.version, spec.latest_only)
