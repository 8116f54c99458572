"""benchmarks/copy_peers.py: each peer finds real demo images' copies, not an unrelated pair, and
lists undecodable bytes as skipped. Peers need the bench extra; without it each test skips."""

import io

import numpy as np
import pytest
from PIL import Image

from benchmarks.copy_peers import PEERS, available_peers, group_pairs, run_peer
from tests.demo_images import demo_images, jpeg

COPIES = {
    "png_same_pixels": lambda im: _png(im),
    "jpeg_q90": lambda im: jpeg(im, 90),
    "half_size": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), Image.BICUBIC)),
}


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images():
    """(datas, source-copy pairs, unrelated source pairs, junk index): 4 sources; sources 0-2 get a
    same-bytes copy and 3 transformed ones, source 3 only a same-bytes copy (immaculate lists such a
    lone pair under "exact" only); then undecodable bytes."""
    sources = [d for _, d, _, _ in demo_images(4)]
    datas, copy_pairs = list(sources), []
    for s, data in enumerate(sources):
        im = Image.open(io.BytesIO(data)).convert("RGB")
        copies = [data] + ([make(im) for make in COPIES.values()] if s < 3 else [])
        for copy in copies:
            copy_pairs.append((s, len(datas)))
            datas.append(copy)
    datas.append(b"\xff\xd8\xff\xe0 not an image")
    unrelated = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    return datas, copy_pairs, unrelated, len(datas) - 1


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_finds_copies_not_unrelated(name, images, tmp_path):
    reason = available_peers()[name]
    if reason:
        pytest.skip(reason)
    datas, copy_pairs, unrelated, junk = images
    r = run_peer(name, datas, tmp_path)
    assert r.name == name and r.seconds > 0
    assert r.pairs.dtype == np.int64 and r.pairs.shape[1] == 2
    assert (r.pairs[:, 0] < r.pairs[:, 1]).all()
    found = set(map(tuple, r.pairs.tolist()))
    assert set(copy_pairs) <= found, f"missed {sorted(set(copy_pairs) - found)}"
    assert not set(unrelated) & found, f"joined unrelated sources {sorted(set(unrelated) & found)}"
    assert junk in r.skipped and not any(junk in p for p in found)


def test_unknown_peer_raises(tmp_path):
    with pytest.raises(RuntimeError, match="unknown peer"):
        run_peer("no_such_peer", [], tmp_path)


def test_groups_sharing_a_member_are_joined():
    pairs = group_pairs([[4, 1], [1, 7], [2, 3]])
    assert pairs.tolist() == [[1, 4], [1, 7], [2, 3], [4, 7]]
