"""Self-contained HTML: inline CSS, images as base64 PNG data URIs, no scripts and nothing fetched from anywhere.

Every piece of dataset text (episode ids, VLM answers, label-set documents) goes through ``html.escape``:
model output is data and must never become markup.
"""

from __future__ import annotations

import base64
import html
from typing import Iterable

import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1200px;
       color: #1d2430; line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d5dae1; padding-bottom: 4px; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.meta { color: #5b6575; }
.note { background: #f3f6fa; border-left: 4px solid #7a9cc6; padding: 8px 12px; }
.warn { background: #fff6e0; border-left: 4px solid #e0a800; padding: 8px 12px; }
table.table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
table.table th, table.table td { border: 1px solid #d5dae1; padding: 3px 8px; text-align: right; }
table.table th { background: #eef1f5; }
table.table td:first-child, table.kv td { text-align: left; }
img.figure { max-width: 100%; height: auto; display: block; margin: 8px 0; border: 1px solid #e3e7ec; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 0.82em; max-height: 420px; }
figcaption { color: #5b6575; font-size: 0.85em; }
"""


def png_img(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` inline, with escaped alt text."""
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def table(df: pd.DataFrame, index: bool = True, key_value: bool = False) -> str:
    """A DataFrame as an escaped HTML table with 4 significant digits; ``key_value`` left-aligns text values."""
    classes = ["table", "kv"] if key_value else ["table"]
    return df.to_html(index=index, escape=True, float_format=lambda v: f"{v:.4g}", na_rep="-", classes=classes, border=0)


def section(title: str, *parts: str) -> str:
    anchor = "".join(ch if ch.isalnum() else "-" for ch in title.lower())
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def paragraph(text: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def preformatted(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def page(title: str, subtitle: str, sections: Iterable[str]) -> str:
    """A whole document: no external stylesheet, script, font or icon (the empty data: icon stops a favicon fetch)."""
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(subtitle)}</p>
{body}
</body>
</html>
"""
