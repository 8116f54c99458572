"""Image bytes of ingested samples read back from their tars, for the copy check
(audit.copy_verification.PairVerifier's `fetch`): the check needs the pixels of the few samples
in pairs it verifies, long after ingest, without holding every image in memory.

Input: an OutputDir after ingest, the verifier's row space as (shard, key), a binary opener.
Output: fetch(row) -> bytes or None. Failure: a sample without a stored location, a shard with
no ingest marker, or a read error gives None (the pair then keeps SSCD's word).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from audit.shard_ingest import STAGE as INGEST_STAGE
from audit.store import scan


def stored_image_fetcher(out, keys: Sequence[tuple[str, str]], opener: Callable) -> Callable[[int], bytes | None]:
    """fetch(row) -> the image bytes of sample keys[row] = (shard, key), read back from its
    ingested tar by (image_offset, image_bytes); None when the sample or its shard cannot be
    read. `out` is an OutputDir, `opener(uri)` a binary file opener. Each shard's locations are
    looked up once, when one of its samples is first fetched."""
    located: dict[str, dict[str, tuple[int, int]]] = {}
    uris: dict[str, str] = {}
    samples: list[str] = []  # the samples table's file list, listed once (not once per shard)

    def fetch(row: int) -> bytes | None:
        shard, key = (str(v) for v in keys[row])
        if not uris:
            uris.update({m["shard"]: m["uri"] for m in out.markers(INGEST_STAGE)})
        if not samples:
            samples.append(out.read_sql("samples"))
        if shard not in located:
            located[shard] = {r["key"]: (int(r["image_offset"]), int(r["image_bytes"])) for r in scan(
                f"SELECT key, image_offset, image_bytes FROM {samples[0]} "
                "WHERE shard = ? AND status = 'ok' AND image_offset IS NOT NULL", [shard])}
        loc, uri = located[shard].get(key), uris.get(shard)
        if loc is None or uri is None:
            return None
        try:
            with opener(uri) as f:
                f.seek(loc[0])
                return f.read(loc[1])
        except OSError:
            return None
    return fetch
