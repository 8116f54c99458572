"""The clean job's image re-encoders: a sanitizer chosen by the perturbation audit (or the
config) applied to each kept image as it is written (audit.clean.shards.write_clean_shard).

Input: the sanitizer's name and parameters (`{'name', 'params'}` of
OUT/exports/perturbation_sanitizer.json or `clean.sanitize`). Output: an `ImageFn` (image
bytes, the sample's metadata) -> (new bytes, new extension), or (the same bytes, None) for an
image it leaves as it is. Failure: `ValueError` for a sanitizer that is not image-level, or
class_deconvolution without kernels and a label field; `ImageRejected` from the decoder for an
image ingest would refuse.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from audit.perturbations.class_deconvolution import deconvolve_image
from audit.clean.shards import ImageFn
from audit.ingest.image_decode import pil_rgb
from audit.perturbations.image_sanitizers import IMAGE_LEVEL, sanitize_image


def sanitizing_encoder(name: str, params: dict) -> ImageFn:
    """Decode, sanitize (audit.perturbations.image_sanitizers, image-level ones; class_deconvolution: see
    deconvolving_encoder), encode. JPEG at quality q is one re-encode at q (exactly the
    sanitizer); the others are stored as lossless PNG so the sanitized pixels are what training
    reads."""
    if name == "class_deconvolution":
        return deconvolving_encoder(params)
    if name not in IMAGE_LEVEL:
        raise ValueError(f"clean.sanitize: {name!r} is not an image-level sanitizer ({', '.join(IMAGE_LEVEL)})")

    def fn(data: bytes, meta: dict) -> tuple[bytes, str | None]:
        img = pil_rgb(data)
        buf = io.BytesIO()
        if name == "jpeg":
            img.save(buf, format="JPEG", quality=int(params.get("quality", 10)))
            return buf.getvalue(), "jpg"
        Image.fromarray(sanitize_image(np.asarray(img), name, **params)).save(buf, format="PNG")
        return buf.getvalue(), "png"
    return fn


def deconvolving_encoder(params: dict) -> ImageFn:
    """The audit's class-wise deconvolution: the class from the sample's metadata field
    (params['label_field']), its kernel from params['kernels'] (by class name), the result as
    lossless PNG. An image of a class without a kernel (the audit found it clean) or without that
    field is left as it is."""
    if not params.get("label_field") or not params.get("kernels"):
        raise ValueError("clean.sanitize: class_deconvolution needs the audit's kernels and a label_field")
    kernels = {str(k): np.asarray(v, np.float64) for k, v in params["kernels"].items()}
    field = params["label_field"]

    def fn(data: bytes, meta: dict) -> tuple[bytes, str | None]:
        kernel = kernels.get(str(meta.get(field)))
        if kernel is None:
            return data, None
        buf = io.BytesIO()
        Image.fromarray(deconvolve_image(np.asarray(pil_rgb(data)), kernel)).save(buf, format="PNG")
        return buf.getvalue(), "png"
    return fn
