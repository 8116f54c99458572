"""Image bytes of ingested samples read back from their tars, for the copy check
(audit.copy_check.verification.PairVerifier's `fetch`): the check needs the pixels of the few samples
in pairs it verifies, long after ingest, without holding every image in memory. A row-space
adapter over audit.ingest.sample_store.StoredImages (one lookup per shard, one open tar per shard).

Input: an OutputDir after ingest, the verifier's row space as (shard, key), a binary opener.
Output: fetch(row) -> bytes or None. Failure: a sample without a stored location, a shard with
no ingest marker, or a read error gives None (the pair then keeps SSCD's word); a shard whose
tar could not be read is not tried again by the same fetch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from audit.ingest.sample_store import StoredImages


def stored_image_fetcher(out, keys: Sequence[tuple[str, str]], opener: Callable) -> Callable[[int], bytes | None]:
    """fetch(row) -> the image bytes of sample keys[row] = (shard, key), read back from its
    ingested tar by (image_offset, image_bytes); None when the sample or its shard cannot be
    read. `out` is an OutputDir, `opener(uri)` a binary file opener. Each shard's locations are
    looked up once, when one of its samples is first fetched; its tar stays open (at most
    StoredImages' max_open at once) until the fetch is dropped."""
    store = StoredImages(out, opener)

    def fetch(row: int) -> bytes | None:
        shard, key = (str(v) for v in keys[row])
        return store.get(shard, key)
    return fetch
