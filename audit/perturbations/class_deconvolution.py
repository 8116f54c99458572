"""Class-wise deconvolution: undo a convolution-based class-wise poison (CUDA, Sadasivan et al.
2023) by estimating each class's blur kernel against a clean reference and inverting it.

A CUDA poison convolves every image of class c with one small random kernel k_c (the reference
code: 3x3, zero padding, then each image divided by its own maximum). That kernel is the
shortcut a network learns; a generic blur or low-pass leaves the class-wise differences in
place (sharpen + low-pass recovered under half of the accuracy gap on MNIST). If k_c is known,
a Wiener filter removes it. It is estimated per class from two statistics that a convolution
changes in a known way, comparing the data's class c with the clean reference's class c:

- the class-mean image: E[k * x] = k * E[x], so k_c * mean_ref_c should equal mean_data_c
  (least squares; with `zero_border` the convolution pads with zeros as the poisoner did, so the
  image border also constrains k; otherwise only the interior is compared);
- the mean log power spectrum of Hann-windowed interiors: log|F(k * x)|^2 = log|K|^2 +
  log|F x|^2 per image, so mean_data - mean_ref = log|K|^2 at every frequency. Averaging logs,
  not powers, keeps a few high-texture images from dominating.

The spectrum fixes |K| (up to k versus its 180-degree flip); the class means fix the phase
and the scale (the per-image normalisation). With `zero_border` a third statistic comes from
the data alone: where an image is flat near its edge (clip art's white canvas, a sky), zero
padding makes the edge pixels a known fraction of the flat interior (the top row keeps 1 -
sum(top kernel row)/sum(k), a corner adds its tap back), so the ratios of edge to interior
pixels, medians over every flat edge position of the class and relative to the reference's
own ratios, pin the normalised kernel down without sampling noise between two sets of images
(`edge_ratios`; on clip art they match the true kernels' ratios to about 0.002). The fit is least squares over both (torch LBFGS,
float64), started from the class-mean solution, its flip and a delta at each tap plus a floor,
keeping the lowest loss. A class keeps the identity kernel when its fit explains it no better
than sampling noise does (see fit_class_kernels: the guard) or when the reference lacks it.

Deconvolution: per image, the outer ring of kernel-radius pixels (where zero padding darkened
or lightened the border) is replaced by edge replication of the interior, the image is
reflect-padded, and X = Y conj(K) / (|K|^2 + lam max|K|^2) is applied per channel with K
scaled to unit DC gain (each image keeps its brightness: CUDA rescales every image by its own
maximum, so a fitted scale would only write a class-wise brightness into the data; on clip art
that alone took the CNN from 0.54 to 0.28); the result is clipped to [0, 1]. Fitted on the reference itself the kernels are near identity, so the
reference sanitized the same way (the re-test's thresholds) is nearly unchanged.

Input: float images (N, H, W, C), C in {1, 3}, values in [0, 1], one size for data and
reference, labels (N,). Output: (sanitized float32 images, info: see fit_class_kernels). Failure:
ValueError for shape or label mismatches, fewer than 2 classes, or a reference of another size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WIENER_LAMBDA = 1e-2   # regulariser, relative to max |K|^2
GUARD_FACTOR = 3.0     # deconvolve a class only when its kernel explains this much more than noise does
MIN_GAIN = 0.1         # ... and at least this much: |K| ~30% off identity on average (CUDA: 0.3-1.3)
MEAN_WEIGHT = 1.0      # weight of the class-mean term against the log-spectrum term
EDGE_WEIGHT = 1000.0   # weight of the edge-ratio term (squared ratio errors, a few 1e-3 when known)
EDGE_TOLERANCE = 1.5 / 255   # 'flat': the interior window varies by at most this
EDGE_MIN_LEVEL = 0.2   # ... and is at least this bright (ratios of dark pixels are noise)
EDGE_MIN_COUNT = 20    # flat positions needed before a ratio is used


def _as_images(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise ValueError(f"{what}: expected images (N, H, W, C) with C in {{1, 3}}, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(f"{what}: image values must be finite and lie in [0, 1]")
    return x


def _log_power(x: np.ndarray, border: int) -> np.ndarray:
    """Mean over images and channels of log |FFT|^2 of the Hann-windowed interior."""
    h, w = x.shape[1] - 2 * border, x.shape[2] - 2 * border
    inner = x[:, border:border + h, border:border + w]
    win = np.outer(np.hanning(h), np.hanning(w))[None, :, :, None]
    power = np.abs(np.fft.fft2(inner * win, axes=(1, 2))) ** 2
    return np.log(power + 1e-7 * h * w).mean(axis=(0, 3))


def _kernel_spectrum(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """|FFT|^2 of the cross-correlation kernel k (s, s) embedded in an h x w grid."""
    s = k.shape[0]
    p = s // 2
    grid = torch.zeros(h, w, dtype=k.dtype)
    rows = torch.tensor([(p - a) % h for a in range(s)])
    cols = torch.tensor([(p - b) % w for b in range(s)])
    grid = grid.index_put((rows[:, None].expand(s, s).reshape(-1), cols[None, :].expand(s, s).reshape(-1)),
                          k.reshape(-1))
    return torch.fft.fft2(grid).abs() ** 2


def _mean_solution(mean_ref: np.ndarray, mean_data: np.ndarray, size: int, zero_border: bool) -> np.ndarray:
    """Least-squares kernel with k * mean_ref ~ mean_data (small ridge)."""
    p = size // 2
    h, w, _ = mean_ref.shape
    if zero_border:
        padded = np.pad(mean_ref, ((p, p), (p, p), (0, 0)))
        target = mean_data
    else:
        padded, h, w = mean_ref, h - 2 * p, w - 2 * p
        target = mean_data[p:p + h, p:p + w]
    cols = np.stack([padded[a:a + h, b:b + w].ravel() for a in range(size) for b in range(size)], 1).astype(np.float64)
    gram = cols.T @ cols
    ridge = 1e-3 * np.trace(gram) / len(gram)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), cols.T @ target.ravel()).reshape(size, size)


def _edge_positions(size: int) -> list[tuple[int, int]]:
    """(row offset, col offset) of the measured edge pixels in the top-left quadrant: sides
    (r, -1) for rows r < p (any column), corners (r, c) for r, c < p."""
    p = size // 2
    return [(r, -1) for r in range(p)] + [(r, c) for r in range(p) for c in range(p)]


def edge_ratios(x: np.ndarray, size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Edge-to-interior ratios of images (N, H, W, C) where the interior is flat, for the 4
    sides and 4 corners (each a view of the top-left quadrant): returns (medians, counts), one
    per edge position and orientation (NaN where none is flat). Side (r, -1): pixel (r, j) over
    (p, j), where rows p..2p, columns j-p..j+p are flat; corner (r, c): pixel (r, c) over (p, p),
    where rows and columns p..2p are flat."""
    p = size // 2
    views = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]  # top-left, top-right, bottom-left, bottom-right
    sides = [x, x[:, ::-1], x.transpose(0, 2, 1, 3), x.transpose(0, 2, 1, 3)[:, ::-1]]  # top, bottom, left, right
    meds, counts = [], []

    def median(r: np.ndarray) -> float:
        return float(np.median(r)) if len(r) else float("nan")

    for r, c in _edge_positions(size):
        for v in (sides if c < 0 else views):
            if c < 0:
                win = np.stack([v[:, a, b:v.shape[2] - 2 * p + b] for a in range(p, 2 * p + 1)
                                for b in range(2 * p + 1)], 0)
                inner, edge = v[:, p, p:v.shape[2] - p], v[:, r, p:v.shape[2] - p]
            else:
                win = v[:, p:2 * p + 1, p:2 * p + 1].reshape(len(v), -1, v.shape[3]).transpose(1, 0, 2)
                inner, edge = v[:, p, p], v[:, r, c]
            flat = (win.max(0) - win.min(0) <= EDGE_TOLERANCE) & (inner >= EDGE_MIN_LEVEL)
            ratio = (edge / np.maximum(inner, 1e-6))[flat]
            meds.append(median(ratio))
            counts.append(len(ratio))
    return np.array(meds), np.array(counts)


def _predicted_edge_ratios(k: torch.Tensor) -> torch.Tensor:
    """edge_ratios of a flat image cross-correlated with k under zero padding (same order)."""
    size = k.shape[0]
    p = size // 2
    m = 4 * p + 2
    flat = F.conv2d(torch.ones(1, 1, m, m, dtype=k.dtype), k[None, None], padding=p)[0, 0] / k.sum()
    views = [flat, flat.flip(1), flat.flip(0), flat.flip(0, 1)]
    sides = [flat, flat.flip(0), flat.T, flat.T.flip(0)]
    out = []
    for r, c in _edge_positions(size):
        out += [v[r, m // 2] / v[p, m // 2] for v in sides] if c < 0 else [v[r, c] / v[p, p] for v in views]
    return torch.stack(out)


def fit_kernel(ref: np.ndarray, data: np.ndarray, size: int = 3, zero_border: bool = True,
               iters: int = 100) -> tuple[np.ndarray, float, float]:
    """One class: the kernel k (size, size), cross-correlation orientation (as torch conv2d),
    with data ~ k * ref in class mean and log spectrum; returns (k, loss, loss of the best
    identity kernel, i.e. of 'no convolution' with only a scale)."""
    p = size // 2
    mean_ref, mean_data = ref.mean(0), data.mean(0)
    border = 2 * p
    spec = torch.tensor(_log_power(data, border) - _log_power(ref, border))
    h, w = spec.shape
    mr = torch.tensor(mean_ref, dtype=torch.float64).permute(2, 0, 1)[None]
    md = torch.tensor(mean_data, dtype=torch.float64).permute(2, 0, 1)[None]
    if not zero_border:
        md = md[:, :, p:md.shape[2] - p, p:md.shape[3] - p]
    channels = mr.shape[1]
    norm = float((md ** 2).sum()) or 1.0
    edge_target, edge_used = None, None
    if zero_border:  # the data's edge ratios relative to the reference's (1 for clean flat edges)
        (got, n_got), (base, n_base) = edge_ratios(data, size), edge_ratios(ref, size)
        base = np.where(n_base >= EDGE_MIN_COUNT, base, 1.0)
        used = (n_got >= EDGE_MIN_COUNT) & np.isfinite(got)
        if used.any():
            edge_target = torch.tensor(np.where(used, got / base, 0.0))
            edge_used = torch.tensor(used)

    def objective(k: torch.Tensor) -> torch.Tensor:
        pred = F.conv2d(mr, k.expand(channels, 1, size, size), groups=channels, padding=p if zero_border else 0)
        loss = MEAN_WEIGHT * ((pred - md) ** 2).sum() / norm + \
            ((torch.log(_kernel_spectrum(k, h, w) + 1e-12) - spec) ** 2).mean()
        if edge_target is not None:
            loss = loss + EDGE_WEIGHT * (((_predicted_edge_ratios(k) - edge_target) ** 2)[edge_used]).sum()
        return loss

    k0 = _mean_solution(mean_ref, mean_data, size, zero_border)
    scale = float(k0.sum()) or 1.0
    starts = [k0, k0[::-1, ::-1].copy()]
    for i in range(size * size):
        d = np.full(size * size, 0.1)
        d[i] = 1.0
        starts.append(d.reshape(size, size) / d.sum() * scale)
    best: tuple[float, np.ndarray] | None = None
    for start in starts:
        k = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([k], max_iter=iters, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            value = objective(k)
            value.backward()
            return value

        opt.step(closure)
        with torch.no_grad():
            value = float(objective(k))
        if np.isfinite(value) and (best is None or value < best[0]):
            best = (value, k.detach().numpy().copy())
    if best is None:
        raise ValueError("kernel fit diverged from every start")
    # 'no convolution': the identity with its best scale (a 1-D search; the spectrum term is
    # quadratic in log scale, the mean term in scale)
    with torch.no_grad():
        grid = np.exp(np.linspace(-1.5, 1.5, 61)) * float(md.mean()) / max(float(mr.mean()), 1e-12)
        delta = torch.zeros(size, size, dtype=torch.float64)
        delta[p, p] = 1.0
        identity_loss = min(float(objective(delta * g)) for g in grid)
    return best[1].astype(np.float32), best[0], identity_loss


def blur_distance(k: np.ndarray) -> float:
    """L1 distance of the sum-normalised kernel from the best single-tap kernel (a pure shift
    is not a blur): 0 for identity, about 1.1 for CUDA's 3x3 blur-0.3 kernels."""
    k = np.asarray(k, np.float64)
    k = k / k.sum() if abs(k.sum()) > 1e-12 else k
    return float(np.abs(k).sum() - 2 * np.abs(k).max() + 1)


def fit_class_kernels(x: np.ndarray, y: np.ndarray, ref_x: np.ndarray, ref_y: np.ndarray, size: int = 3,
                      zero_border: bool = True, guard: bool = True, seed: int = 0) -> dict:
    """Per class of y: the fitted kernel against the reference's same class (see fit_kernel).
    With `guard`, a class keeps the identity kernel unless the kernel explains the class much
    better than no convolution does: the loss gain (identity's loss minus the kernel's) must
    exceed GUARD_FACTOR times the gain of a kernel fitted between two random halves of the
    reference class (pure sampling noise; on varied classes such as clip art a clean class's
    kernel is noise, and deconvolving by it would write a class-wise filter into clean data) and
    MIN_GAIN. On MNIST and clip art, CUDA classes gain 0.3-1.3, clean ones 0.003-0.05.
    Returns {"kernels": {label: k}, "loss": {label: loss}, "gain": {label: gain}, "noise":
    {label: the halves' gain}, "distance": {label: blur_distance(k)}, "applied": [labels
    deconvolved], "missing": [labels without reference samples]}."""
    x, ref_x = _as_images(x, "data"), _as_images(ref_x, "reference")
    y, ref_y = np.asarray(y), np.asarray(ref_y)
    if y.shape != (len(x),) or ref_y.shape != (len(ref_x),):
        raise ValueError(f"labels must match the images: {y.shape} for {len(x)}, {ref_y.shape} for {len(ref_x)}")
    if x.shape[1:] != ref_x.shape[1:]:
        raise ValueError(f"data {x.shape[1:]} and reference {ref_x.shape[1:]} images must have one size")
    if min(x.shape[1:3]) < 4 * size:
        raise ValueError(f"images of {x.shape[1:3]} are too small for a {size}x{size} kernel")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"class-wise deconvolution needs at least 2 classes, got {len(classes)}")
    identity = np.zeros((size, size), np.float32)
    identity[size // 2, size // 2] = 1.0
    rng = np.random.default_rng(seed)
    info: dict = {"kernels": {}, "loss": {}, "gain": {}, "noise": {}, "distance": {}, "applied": [], "missing": []}
    for c in classes:
        ref_c = ref_x[ref_y == c]
        if not len(ref_c):
            info["kernels"][c] = identity
            info["missing"].append(c)
            continue
        k, info["loss"][c], identity_loss = fit_kernel(ref_c, x[y == c], size, zero_border)
        info["gain"][c] = identity_loss - info["loss"][c]
        info["distance"][c] = blur_distance(k)
        if guard and len(ref_c) >= 4:
            half = rng.permutation(len(ref_c))
            _, loss0, identity0 = fit_kernel(ref_c[half[:len(half) // 2]], ref_c[half[len(half) // 2:]], size,
                                             zero_border)
            info["noise"][c] = identity0 - loss0
        if info["gain"][c] > max(GUARD_FACTOR * info["noise"].get(c, 0.0), MIN_GAIN if guard else 0.0):
            info["kernels"][c] = k
            info["applied"].append(c)
        else:
            info["kernels"][c] = identity
    return info


def deconvolve(x: np.ndarray, kernel: np.ndarray, lam: float = WIENER_LAMBDA) -> np.ndarray:
    """Wiener-deconvolve images (N, H, W, C) in [0, 1] by one cross-correlation kernel (s, s):
    border ring replaced from the interior, reflect padding, clip to [0, 1]. float32."""
    x = _as_images(x, "images")
    kernel = np.asarray(kernel, np.float64)
    if kernel.sum() > 1e-12:  # unit DC gain: each image keeps its brightness (CUDA rescales every
        kernel = kernel / kernel.sum()  # image by its own maximum, so the kernel's scale is not the class's)
    s = kernel.shape[0]
    if kernel.shape != (s, s) or s % 2 == 0:
        raise ValueError(f"kernel must be square with an odd side, got {kernel.shape}")
    p = s // 2
    n, h, w, _ = x.shape
    if min(h, w) <= 2 * p + 1:
        raise ValueError(f"images of {h}x{w} are too small for a {s}x{s} kernel")
    inner = np.pad(x[:, p:h - p, p:w - p], ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    pad = min(8, h - 1, w - 1)
    padded = np.pad(inner, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    hp, wp = padded.shape[1:3]
    grid = np.zeros((hp, wp))
    for a in range(s):
        for b in range(s):
            grid[(p - a) % hp, (p - b) % wp] = kernel[a, b]
    spectrum = np.fft.fft2(grid)
    power = np.abs(spectrum) ** 2
    floor = lam * power.max()
    gain = np.conj(spectrum) / (power + floor) * ((power[0, 0] + floor) / max(power[0, 0], 1e-12))  # exact at DC
    out = np.real(np.fft.ifft2(np.fft.fft2(padded, axes=(1, 2)) * gain[None, :, :, None], axes=(1, 2)))
    return np.clip(out[:, pad:pad + h, pad:pad + w], 0, 1).astype(np.float32)


def class_deconvolution(x: np.ndarray, y: np.ndarray, ref_x: np.ndarray, ref_y: np.ndarray, size: int = 3,
                        lam: float = WIENER_LAMBDA, zero_border: bool = True, guard: bool = True
                        ) -> tuple[np.ndarray, dict]:
    """Fit a kernel per class against the reference and deconvolve each class by its own."""
    info = fit_class_kernels(x, y, ref_x, ref_y, size, zero_border, guard)
    x, y = _as_images(x, "data"), np.asarray(y)
    out = np.empty_like(x)
    for c, k in info["kernels"].items():
        out[y == c] = deconvolve(x[y == c], k, lam)
    return out, info


def deconvolve_image(img: np.ndarray, kernel, lam: float = WIENER_LAMBDA) -> np.ndarray:
    """One uint8 image (HxWx3, HxWx1 or HxW) through one kernel; uint8 of the same shape."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 HxWx3 or HxW image, got {img.dtype} {img.shape}")
    x = img.reshape(img.shape[0], img.shape[1], -1).astype(np.float32)[None] / 255.0
    out = deconvolve(x, np.asarray(kernel, np.float64), lam)[0]
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8).reshape(img.shape)
