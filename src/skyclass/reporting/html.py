"""HTML pieces the audit report and the image galleries share: one stylesheet, one page frame,
one thumbnail helper, one image-switch (plain HTML + CSS, no script)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from skyclass.core.files import read_regular_file

#: Files above this size get no thumbnail (the audit reports them; a gallery does not need them).
THUMBNAIL_MAX_BYTES = 50_000_000
#: Long side of a gallery thumbnail, in pixels.
THUMBNAIL_SIDE = 160
#: The most views :func:`image_views` switches between (the CSS below has a rule for each).
MAX_VIEWS = 3

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.err{color:#b00}.warn{color:#a60}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.card,figure{width:170px;margin:0;font-size:12px;word-break:break-all}
figure{border:1px solid #ccc;padding:6px}
.card img,figure img,.ph{width:160px;height:160px;object-fit:contain;background:#eee;display:block}
.ph{display:flex;align-items:center;justify-content:center;color:#888}
.group{border:1px solid #ddd;padding:6px;margin:6px 0}.plot{max-width:100%}
small{color:#666}figcaption{overflow-wrap:anywhere;word-break:break-word}
"""

#: The rules :func:`image_views` needs; a page that uses it passes them to :func:`page`.
VIEWS_CSS = """
.views>input{position:absolute;opacity:0;pointer-events:none}
.views>label{display:inline-block;margin:0 3px 4px 0;padding:0 5px;border:1px solid #bbb;
border-radius:3px;cursor:pointer;font-size:11px}
.views>input:checked+label{background:#333;color:#fff}
.views>input:focus-visible+label{outline:2px solid #36c}
.views>.view{display:none}
.views>input.v0:checked~.view.v0,.views>input.v1:checked~.view.v1,
.views>input.v2:checked~.view.v2{display:block}
"""


def page(title: str, body: str, *, css: str = "") -> str:
    """A self-contained HTML document with the shared stylesheet (and ``css``, rules of this
    module such as :data:`VIEWS_CSS`, after it); ``title`` is escaped."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}{css}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def thumbnail_uri(path: Path, side: int = THUMBNAIL_SIDE) -> str | None:
    """A small JPEG data URI of an image file, or None when it is not a readable image.

    Reads regular files of at most :data:`THUMBNAIL_MAX_BYTES` only and decodes through the
    serving decoder (its pixel limit, JPEG draft mode), so a FIFO, a device or a decompression
    bomb in the data folder never hangs or floods a report.
    """
    from PIL import Image

    from skyclass.core.errors import ImageError
    from skyclass.core.preprocess import decode_image

    data = read_regular_file(path, THUMBNAIL_MAX_BYTES)
    if not isinstance(data, bytes):
        return None
    try:
        img = decode_image(data, draft_size=(side, side))
    except ImageError:
        return None
    img.thumbnail((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_or_placeholder(uri: str | None, alt: str = "") -> str:
    """An ``<img>`` for a thumbnail URI, or a grey "no preview" box."""
    if uri is None:
        return '<div class="ph">no preview</div>'
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def png_uri(png: bytes) -> str:
    """A data URI of PNG bytes, for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_views(group: str, views: Sequence[tuple[str, str]]) -> str:
    """Up to :data:`MAX_VIEWS` pieces of HTML (an image each) shown one at a time, the first at
    start, picked by a row of buttons: ``views`` is (button text, HTML). Radio inputs and CSS
    only (the page needs :data:`VIEWS_CSS`); ``group`` names the radio group, unique per page."""
    if not 1 <= len(views) <= MAX_VIEWS:
        raise ValueError(f"image_views takes 1 to {MAX_VIEWS} views, got {len(views)}")
    name = html.escape(group)
    buttons, panes = [], []
    for k, (text, content) in enumerate(views):
        checked = " checked" if k == 0 else ""
        buttons.append(
            f'<input type="radio" name="{name}" id="{name}-{k}" class="v{k}"{checked}>'
            f'<label for="{name}-{k}">{html.escape(text)}</label>'
        )
        panes.append(f'<div class="view v{k}">{content}</div>')
    return f'<div class="views">{"".join(buttons)}{"".join(panes)}</div>'
