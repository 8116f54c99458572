"""Finding one picture inside another without keypoints (audit.copy_check.inside), and the candidate
rule that uses it (CopyRule.confirms / PairVerifier.confirms): a tight crop of a smooth picture,
which has too few SIFT keypoints to align, is confirmed; a piece of a different picture is not."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from audit.copy_check.inside import inside_agreement
from audit.copy_check.verification import CopyRule, PairVerifier, keypoint_verify, prepare, verify


def _smooth_picture(seed: int, w: int = 640, h: int = 480) -> np.ndarray:
    """A smooth photo-like RGB image: blurred noise at two scales over a colour gradient."""
    rng = np.random.default_rng(seed)
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 24)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 6)
    ramp = np.linspace(60, 190, w, dtype=np.float32)[None, :, None]
    img = ramp + 900 * coarse + 250 * fine
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pictures():
    src = _smooth_picture(1)
    h, w = src.shape[:2]
    other = _smooth_picture(2)
    half = cv2.resize(src, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return {"src": _jpeg(src), "half": _jpeg(half, 80),
            "corner": _jpeg(src[h // 3:h // 3 + h // 2, w // 2:]),  # off-centre, 50% of each side
            "other_corner": _jpeg(other[h // 3:h // 3 + h // 2, w // 2:])}


def test_an_off_centre_crop_is_found_inside_its_source_and_a_resized_copy(pictures):
    crop = prepare(pictures["corner"])
    for name in ("src", "half"):
        agr = inside_agreement(prepare(pictures[name]), crop)
        assert agr >= 0.9, (name, agr)
        assert inside_agreement(crop, prepare(pictures[name])) == pytest.approx(agr)  # order free


def test_a_piece_of_a_different_picture_is_not_found_inside(pictures):
    src = prepare(pictures["src"])
    agr = inside_agreement(src, prepare(pictures["other_corner"]))
    assert not agr >= 0.7, agr
    assert not inside_agreement(src, prepare(pictures["other_corner"])) >= 0.7


def test_candidate_rule_confirms_a_keypoint_starved_crop_and_nothing_else(pictures):
    rows = ["src", "corner", "other_corner"]
    verifier = PairVerifier(lambda r: pictures[rows[r]])
    v = keypoint_verify(prepare(pictures["src"]), prepare(pictures["corner"]))
    assert not CopyRule().confirms(v), v  # keypoints alone would leave the crop out
    assert CopyRule().confirms(verify(prepare(pictures["src"]), prepare(pictures["corner"]), candidate=True))
    assert verifier.confirms(0, 1)
    assert not verifier.confirms(0, 2)
    assert (verifier.checked, verifier.added) == (2, 1)


def test_candidate_rule_adds_nothing_for_unreadable_images(pictures):
    verifier = PairVerifier(lambda r: pictures["src"] if r == 0 else b"not an image")
    assert not verifier.confirms(0, 1)
    assert verifier.added == 0


def test_coarse_to_fine_match_places_a_crop_where_it_was_cut(pictures):
    """_best_match searches the scales at half resolution and refines the best at full
    resolution: a crop cut at a known place and scale is placed at the nearest of the scales
    (~10% apart) with its centre within two pixels (ECC refines the rest)."""
    from audit.copy_check.inside import _best_match
    big = prepare(pictures["src"]).gray
    h, w = big.shape
    y, x, ch, cw = 37, 101, h // 2, w // 2
    small = cv2.resize(big[y:y + ch, x:x + cw], (cw * 3 // 2, ch * 3 // 2), interpolation=cv2.INTER_LINEAR)
    ncc, warp = _best_match(big, small)
    assert ncc >= 0.9
    assert warp[0, 0] == pytest.approx(2 / 3, rel=0.06) and warp[1, 1] == pytest.approx(2 / 3, rel=0.06)
    sh, sw = small.shape
    centre = warp @ np.array([sw / 2, sh / 2, 1.0])
    assert np.abs(centre - [x + cw / 2, y + ch / 2]).max() <= 2, (warp, centre)
