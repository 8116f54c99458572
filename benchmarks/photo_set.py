"""The photo copy-detection benchmark set: real photographs from Debian packages, each with 17
transformed copies, plus hard negatives, split by source package into a tuning half and a
reporting half (benchmarks/dedup_quality.py; the tuning half is what thresholds and rules of
audit/dedup/copy_detection.py were chosen on, the reporting half was not looked at while tuning).

Sources (freely licensed; fetched at run time with `apt-get download`, never committed):
- tune: `opencv-doc` (OpenCV's sample photos, examples/data, examples/text, examples/hfs;
  BSD-3 package, the photos are OpenCV's test images) and `gnome-backgrounds` (CC-BY-SA 3.0;
  only as hard negatives: light/dark theme variants of one design); added later, to give the
  hard transforms more to tune on: `python3-skimage` (scikit-image's sample photos, BSD-3
  package: astronaut, rocket and Hubble deep field by NASA/SpaceX, public domain; camera,
  chelsea, coffee, retina and the brick/grass/gravel textures CC0; coins (Brooklyn Museum) and
  text, no known restrictions; the Middlebury motorcycle stereo pair, left a source and right its
  hard negative) and `python-matplotlib-data` (grace_hopper.jpg, a US Navy photo, public domain).
- report: `lomiri-wallpapers-16.04` and `-20.04` (CC-BY-SA 3.0/4.0, CC-BY 4.0 photographs by
  the named photographers), `mate-backgrounds` (nature photos, GPL-2+), and
  `plasma-workspace-wallpapers` (KDE's photographic wallpapers, LGPL-3 / CC-BY-SA 4.0);
  hard negatives: MATE's colour variants of one design.
Photographs only (renders, clip art and diagrams left out by name). Hard negatives are
different photos of one scene or series (stereo pairs, viewpoint and illumination changes,
calibration series) or colour/theme variants of one design: they are added untransformed and
are their own groups, so joining one to its sibling (or to its sibling's copies) is a false pair.

Every source is scaled to at most `MAX_SIDE` px on its longer side (a web-sized photo) and
stored as JPEG q95; each gets one copy per transform (`TRANSFORMS`): JPEG q80/50/20; resize
1/2 and 1/4; centre crops keeping 90/80/60% of each side; an off-centre crop keeping 50% of
each side (random corner region); horizontal flip; rotation by U[5, 15] degrees (random sign,
same size, black corners); colour jitter (brightness, contrast, saturation each x U[0.7, 1.3]);
grayscale; Gaussian blur (radius 1% of the shorter side); a caption bar (a dark band over the
bottom 15% with white text); squash to another aspect ratio (width x U[0.6, 0.75] or x U[1.35,
1.6]); pasted on a larger canvas (a random flat colour) at U[25, 60]% of its area, at a random
place. Copies are JPEG q95 except the JPEG rows (their own quality). Deterministic by seed.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(_REPO))

from benchmarks.debian_packages import unpacked  # noqa: E402

MAX_SIDE = 768
CACHE = Path(os.environ.get("SHARDGUARD_BENCH_CACHE", Path.home() / ".cache" / "shardguard-bench"))
TRANSFORMS = ["jpeg80", "jpeg50", "jpeg20", "resize1/2", "resize1/4", "crop90", "crop80", "crop60",
              "crop50off", "flip", "rotate", "jitter", "gray", "blur", "caption_bar", "squash", "canvas"]
MILD = ["jpeg80", "jpeg50", "resize1/2", "crop90", "crop80", "flip"]
HARD = ["canvas", "crop60", "crop50off", "rotate"]

OPENCV = "usr/share/doc/opencv-doc/examples/"
SKIMAGE = "usr/lib/python3/dist-packages/skimage/data/"
# (package, split, {photo path inside the package: role}); role "src" = a source that gets
# copies, "neg:<sibling>" = a hard negative added as is (a different photo of <sibling>'s scene
# or series, or a variant of its design).
PHOTOS: dict[str, tuple[str, dict[str, str]]] = {
    "opencv-doc": ("tune", {
        **{OPENCV + f"data/{n}": "src" for n in (
            "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg",
            "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "home.jpg", "left.jpg", "leuvenA.jpg",
            "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg",
            "starry_night.jpg", "stuff.jpg", "text_defocus.jpg", "left01.jpg", "graf1.png",
            "rubberwhale1.png", "smarties.png", "box_in_scene.png", "basketball1.png", "sudoku.png")},
        OPENCV + "alphamat/input_images/plant.jpg": "src",
        **{OPENCV + f"hfs/data/00{k}.jpg": "src" for k in range(3)},
        **{OPENCV + f"text/scenetext0{k}.jpg": "src" for k in range(1, 7)},
        **{OPENCV + f"data/{a}": f"neg:{OPENCV}data/{b}" for a, b in (
            ("aero3.jpg", "aero1.jpg"), ("aloeR.jpg", "aloeL.jpg"), ("right.jpg", "left.jpg"),
            ("leuvenB.jpg", "leuvenA.jpg"), ("graf3.png", "graf1.png"), ("left02.jpg", "left01.jpg"),
            ("right01.jpg", "left01.jpg"), ("basketball2.png", "basketball1.png"))},
        **{OPENCV + f"data/{n}": "src" for n in ("chicky_512.png", "pca_test1.jpg")},
    }),
    "gnome-backgrounds": ("tune", {
        f"usr/share/backgrounds/gnome/{n}-{v}.webp": f"neg:{n}" for n in (
            "adwaita", "grid", "licorice", "pixels", "truchet", "wood") for v in "ld"}),
    "lomiri-wallpapers-16.04": ("report", {f"usr/share/backgrounds/{n}": "src" for n in (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg", "greentock_by_Peter_Nerlich.jpg",
        "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg",
        "analogpattern_by_Peter_Nerlich.jpg")}),
    "lomiri-wallpapers-20.04": ("report", {"usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg": "src"}),
    "mate-backgrounds": ("report", {
        **{f"usr/share/backgrounds/mate/nature/{n}.jpg": "src" for n in (
            "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
            "Storm", "TwoWings", "Wood", "YellowFlower")},
        **{f"usr/share/backgrounds/mate/desktop/Ubuntu-Mate-{n}-no-logo.png": "neg:ubuntu-mate" for n in (
            "Cold", "Dark", "Radioactive", "Warm")},
        **{f"usr/share/backgrounds/mate/desktop/{n}.png": "neg:mate-stripes" for n in (
            "MATE-Stripes-Light", "MATE-Stripes-Dark", "Stripes")},
    }),
    "plasma-workspace-wallpapers": ("report", {
        f"usr/share/wallpapers/{n}/contents/images/{f}": "src" for n, f in (
            ("BytheWater", "1280x800.jpg"), ("ColdRipple", "1280x800.jpg"), ("ColorfulCups", "2560x1600.jpg"),
            ("DarkestHour", "1280x800.jpg"), ("EveningGlow", "1280x800.jpg"), ("FallenLeaf", "1280x800.jpg"),
            ("Grey", "1280x800.jpg"), ("Kite", "1280x800.jpg"), ("OneStandsOut", "1280x800.jpg"),
            ("Path", "1280x800.jpg"), ("summer_1am", "1280x800.jpg"), ("Volna", "5120x2880.jpg"))}),
    # added to the tuning half later (after opencv-doc and gnome-backgrounds, so the copies of
    # the photos above are drawn as before): more sources to tune the hard transforms on.
    "python3-skimage": ("tune", {
        **{SKIMAGE + n: "src" for n in (
            "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "rocket.jpg",
            "hubble_deep_field.jpg", "retina.jpg", "text.png", "brick.png", "grass.png", "gravel.png",
            "motorcycle_left.png")},
        SKIMAGE + "motorcycle_right.png": f"neg:{SKIMAGE}motorcycle_left.png"}),
    "python-matplotlib-data": ("tune", {"usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg": "src"}),
}


@dataclass
class CopySet:
    """One benchmark candidate set. datas[k] is an encoded image; group[k] its source group
    (true pairs share a group); family[k] = -1 for a source, -2 for a hard negative, else the
    index in TRANSFORMS; names[k] a readable id."""
    name: str
    datas: list[bytes]
    group: np.ndarray
    family: np.ndarray
    names: list[str]
    sources: int
    negatives: int


def fetch_packages(cache: Path = CACHE) -> dict[str, Path]:
    """package -> the folder it is unpacked in (benchmarks.debian_packages, cached)."""
    return {pkg: unpacked(pkg, cache / "debs", cache / "photo-packages" / pkg) for pkg in PHOTOS}


def load_photo(path: Path) -> Image.Image:
    """RGB, longer side at most MAX_SIDE (alpha composited on white)."""
    Image.MAX_IMAGE_PIXELS = None  # trusted package files (a 5640x3172 wallpaper)
    with Image.open(path) as im:
        im.draft("RGB", (MAX_SIDE, MAX_SIDE))
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return im


def jpeg(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _caption_bar(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = img.copy()
    d = ImageDraw.Draw(out)
    h = max(8, round(img.height * 0.15))
    d.rectangle((0, img.height - h, img.width, img.height), fill=(20, 20, 20))
    words = ["sale", "today", "only", "photo", "credit", "www", "news", "best", "deal", "free", "view"]
    text = " ".join(rng.choice(words, 4))
    font = ImageFont.load_default(size=max(8, int(h * 0.6)))
    d.text((img.width * 0.03, img.height - h * 0.85), text, fill=(255, 255, 255), font=font)
    return out


def transform(name: str, img: Image.Image, rng: np.random.Generator) -> bytes:
    """The encoded copy of `img` under transform `name` (see the module docstring)."""
    w, h = img.size
    if name.startswith("jpeg"):
        return jpeg(img, int(name[4:]))
    if name.startswith("resize"):
        s = 1 / int(name.split("/")[1])
        return jpeg(img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS))
    if name.startswith("crop"):
        f = int(name[4:6]) / 100
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        if name.endswith("off"):  # off-centre: a random place whose centre is off the image centre
            x, y = int(rng.choice([0, w - cw])), int(rng.integers(0, h - ch + 1))
        else:
            x, y = (w - cw) // 2, (h - ch) // 2
        return jpeg(img.crop((x, y, x + cw, y + ch)))
    if name == "flip":
        return jpeg(ImageOps.mirror(img))
    if name == "rotate":
        angle = float(rng.uniform(5, 15) * rng.choice([-1, 1]))
        return jpeg(img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0)))
    if name == "jitter":
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enh(img).enhance(float(rng.uniform(0.7, 1.3)))
        return jpeg(img)
    if name == "gray":
        return jpeg(img.convert("L"))
    if name == "blur":
        return jpeg(img.filter(ImageFilter.GaussianBlur(max(1.0, 0.01 * min(w, h)))))
    if name == "caption_bar":
        return jpeg(_caption_bar(img, rng))
    if name == "squash":
        s = float(rng.uniform(0.6, 0.75) if rng.random() < 0.5 else rng.uniform(1.35, 1.6))
        return jpeg(img.resize((max(1, round(w * s)), h), Image.LANCZOS))
    if name == "canvas":
        share = float(rng.uniform(0.25, 0.60))  # of the canvas area
        cw, ch = round(w / np.sqrt(share)), round(h / np.sqrt(share))
        canvas = Image.new("RGB", (cw, ch), tuple(int(v) for v in rng.integers(0, 256, 3)))
        canvas.paste(img, (int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))))
        canvas.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        return jpeg(canvas)
    raise ValueError(f"unknown transform {name!r}")


def photo_set(split: str, seed: int = 0, cache: Path = CACHE) -> CopySet:
    """The candidate set of one split ('tune' or 'report'): sources, their copies, hard negatives."""
    roots = fetch_packages(cache)
    rng = np.random.default_rng(seed)
    datas, group, family, names = [], [], [], []
    sources = negatives = 0
    for pkg, (pkg_split, files) in PHOTOS.items():
        if pkg_split != split:
            continue
        for rel, role in files.items():
            path = roots[pkg] / rel
            if not path.exists():
                raise FileNotFoundError(f"{pkg}: {rel} is not in the package (a new package version?)")
            img = load_photo(path)
            g = sources + negatives
            label = f"{pkg}:{Path(rel).name}"
            datas.append(jpeg(img)), group.append(g), names.append(label)
            if role != "src":
                family.append(-2)
                negatives += 1
                continue
            family.append(-1)
            sources += 1
            for t, name in enumerate(TRANSFORMS):
                datas.append(transform(name, img, rng)), group.append(g), family.append(t)
                names.append(f"{label}:{name}")
    return CopySet(f"photos-{split}", datas, np.array(group, np.int64), np.array(family, np.int64),
                   names, sources, negatives)


if __name__ == "__main__":
    for s in ("tune", "report"):
        cs = photo_set(s)
        print(f"{cs.name}: {cs.sources} sources, {cs.negatives} hard negatives, {len(cs.datas)} images, "
              f"{sum(map(len, cs.datas)) / 1e6:.1f} MB")
