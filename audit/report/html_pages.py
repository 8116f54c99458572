"""Self-contained HTML pages for the audit's findings (images inlined as data URIs).

Every piece of text that comes from data (captions, prompts, keys, tokens) goes through
`text()`, which HTML-escapes it: captions are untrusted web text. Images are re-encoded from
decoded pixels (never copied as given bytes), so a page holds no active content.
"""

from __future__ import annotations

import base64
import html
import io

from audit.io import atomic_files

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:6px;vertical-align:top;font-size:14px}
th{background:#f4f4f4}img{image-rendering:pixelated;border:1px solid #ccc}.mono{font-family:monospace}
.tok{padding:1px 3px;margin:1px;border-radius:3px;display:inline-block}.muted{color:#777}"""


def text(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def image_tag(img, size: int = 128) -> str:
    """A PIL image as an <img> with a PNG data URI, scaled to `size` pixels on its long side."""
    if img is None:
        return '<span class="muted">(no image)</span>'
    im = img.convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    w, h = (size, round(size * im.height / im.width)) if im.width >= im.height else (round(size * im.width / im.height), size)
    return f'<img width="{w}" height="{h}" src="data:image/png;base64,{data}">'


def token_spans(tokens: list[dict] | None) -> str:
    """Caption words shaded by their trigger score (darker = more influence on memorization)."""
    if not tokens:
        return ""
    top = max(t["score"] for t in tokens) or 1.0
    return " ".join(f'<span class="tok" title="{t["score"]:.3f}" style="background:rgba(220,40,40,'
                    f'{0.1 + 0.8 * t["score"] / top:.2f})">{text(t["token"])}</span>' for t in tokens)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """`rows` hold HTML already (build cells with text() / image_tag())."""
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path, title: str, body: str, extra_style: str = "") -> str:
    """`extra_style`: more CSS (a constant of the caller, never data)."""
    doc = (f'<!doctype html><html><head><meta charset="utf-8"><title>{text(title)}</title>'
           f"<style>{STYLE}{extra_style}</style></head><body><h1>{text(title)}</h1>{body}</body></html>")
    atomic_files.write_bytes(path, doc.encode("utf-8"))
    return str(path)
