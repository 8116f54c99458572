"""Block agreement and tone (audit.copy_check.pixels.compare): gain-free blocks, plus one bounded
tone map over the blocks that do not disagree, so an outline drawing is not its coloured-in
version while brightness, blur and an overlay stay copies."""

import cv2
import numpy as np

from audit.copy_check.inside import MIN_TONE
from audit.copy_check.pixels import FLAT_STD, compare


def _outline(h: int = 240, w: int = 320) -> np.ndarray:
    """Black outlines of a few shapes on white (a line drawing), grayscale."""
    img = np.full((h, w), 255, np.uint8)
    cv2.rectangle(img, (20, 20), (140, 120), 0, 3)
    cv2.circle(img, (230, 80), 55, 0, 3)
    cv2.ellipse(img, (110, 185), (80, 35), 0, 0, 360, 0, 3)
    cv2.line(img, (200, 150), (300, 220), 0, 3)
    cv2.rectangle(img, (220, 160), (290, 200), 0, 2)
    return img


def _filled(img: np.ndarray) -> np.ndarray:
    """The same drawing with its closed shapes filled in other grays (as a coloured version
    turned gray); the lines stay where they were."""
    out = img.copy()
    for seed, level in (((60, 60), 150), ((230, 80), 200), ((110, 185), 120), ((255, 175), 90)):
        cv2.floodFill(out, None, seed, level)
    return out


def _all(shape) -> np.ndarray:
    return np.ones(shape, bool)


def test_an_outline_agrees_block_by_block_with_its_filled_version_but_not_in_tone():
    a = _outline()
    c = compare(a, _filled(a), _all(a.shape))
    assert c.agreement >= 0.7, c  # gain-free block NCC alone would call it a copy
    assert c.tone < MIN_TONE, c  # the copy rule's tone bound (CopyRule.min_tone)


def test_tone_survives_brightness_contrast_blur_and_an_overlay():
    a = _filled(_outline())
    seen = _all(a.shape)
    brighter = np.clip(a.astype(np.float32) * 0.8 + 40, 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(a, (0, 0), 2.5)
    barred = a.copy()
    barred[200:, :] = 20  # a dark caption bar with white text over the bottom
    cv2.putText(barred, "sale today only", (10, 230), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    for name, b in (("brighter", brighter), ("blurred", blurred), ("bar", barred)):
        c = compare(a, b, seen)
        assert c.tone >= MIN_TONE, (name, c)


def test_nothing_textured_gives_nan():
    flat = np.full((64, 64), 128, np.uint8)
    c = compare(flat, flat + np.uint8(FLAT_STD // 2), _all(flat.shape))
    assert np.isnan(c.agreement) and np.isnan(c.tone) and c.textured == 0


def test_the_copy_check_tells_an_outline_from_its_filled_version():
    """Through prepare / keypoint_verify / CopyRule: the drawing aligns with both its filled
    version and a JPEG copy of itself (same edges), and only the fill is vetoed, by tone."""
    import io

    from PIL import Image

    from audit.copy_check.verification import CopyRule, keypoint_verify, prepare

    def png(gray: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(gray).convert("RGB").save(buf, "PNG")
        return buf.getvalue()

    def jpeg(gray: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(gray).convert("RGB").save(buf, "JPEG", quality=80)
        return buf.getvalue()

    a = _outline()
    src = prepare(png(a))
    filled = keypoint_verify(src, prepare(png(_filled(a))))
    copy = keypoint_verify(src, prepare(jpeg(a)))
    rule = CopyRule()
    assert filled.aligned and filled.agreement >= rule.min_agreement and filled.tone < rule.min_tone, filled
    assert rule.vetoes(filled)
    assert copy.aligned and not rule.vetoes(copy), copy


def test_two_pastes_of_one_picture_on_canvases_of_other_colours_keep_their_tone():
    """The flat canvas around a pasted photo is outside the hull of the agreeing blocks. (A
    drawing on white pasted so is still refused: its white border against the canvas makes
    edge blocks of other contrasts inside the hull.)"""
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (240, 320)).astype(np.float32), (0, 0), 4)
    pic = np.clip(128 + 60 * noise / noise.std(), 0, 255).astype(np.uint8)  # textured to its edges
    a = np.full((400, 480), 40, np.uint8)
    b = np.full((400, 480), 210, np.uint8)
    a[64:304, 80:400] = pic
    b[64:304, 80:400] = pic
    c = compare(a, b, _all(a.shape))
    assert c.agreement >= 0.7 and c.tone >= MIN_TONE, c
