"""The report's HTML page and the data files beside its pictures, each written under a temporary
name and renamed when complete. The page is static: inline CSS, relative image links, no script,
nothing fetched from the network, so it opens the same from ``file://`` or any web server."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.plan import human_bytes
from pipeline.report.layers import LayerTable
from pipeline.storage import temp_sibling

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
.took { color: #777; font-weight: normal; font-size: 0.8em; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
td, th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #999; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; border: 1px solid #eee; }
.scroll { max-height: 900px; overflow: auto; border: 1px solid #ddd; display: inline-block; max-width: 100%; }
.scroll img { max-width: none; border: 0; }
.note { color: #555; }
"""


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary name beside it, then renamed)."""
    tmp = temp_sibling(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=1, default=_plain))


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_parquet(path: Path, data: dict[str, Any]) -> Path:
    """A table of columns (numpy arrays or lists), atomically."""
    tmp = temp_sibling(path)
    try:
        pq.write_table(pa.table(data), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@dataclass
class Section:
    """One part of the page: a title, how long it took, pictures, HTML tables or notes."""

    title: str
    seconds: float = 0.0
    body: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)  # files of the data behind it, relative to the page

    def picture(self, name: str, alt: str, scroll: bool = False) -> None:
        img = f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">'
        self.body.append(f'<div class="scroll">{img}</div>' if scroll else img)

    def note(self, text: str) -> None:
        self.body.append(f'<p class="note">{html.escape(text)}</p>')


def cells(values: list[Any], numeric: set[int] | None = None, tag: str = "td") -> str:
    numeric = numeric or set()
    return "".join(f'<{tag}{" class=n" if k in numeric else ""}>{html.escape(str(v))}</{tag}>'
                   for k, v in enumerate(values))


def plan_tables(layers: LayerTable) -> str:
    """The plan's table (exact nodes and edges per layer, as ``cnngraph plan`` prints them) and
    the bytes per sink."""
    head = "<tr>" + cells(["layer", "type", "output", "nodes", "edges"], {3, 4}, "th") + "</tr>"
    body = [f"<tr>{cells([r.name, r.type, r.shape_text, f'{r.nodes:,}', f'{r.edges:,}' + (' (boundary)' if r.boundary else '')], {3, 4})}</tr>"
            for r in layers.layers]
    total = f'<tr class="total">{cells(["total", "", "", f"{layers.nodes:,}", f"{layers.edges:,}"], {3, 4})}</tr>'
    sizes = "".join(f"<tr>{cells([sink, human_bytes(n), f'{n:,}'], {1, 2})}</tr>" for sink, n in layers.bytes.items())
    return (f'<table id="plan">{head}{"".join(body)}{total}</table>'
            f'<table id="sinks"><tr>{cells(["sink", "estimated size", "bytes"], {1, 2}, "th")}</tr>{sizes}</table>')


def rows_table(table_id: str, header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    numeric = set(range(numeric_from, len(header)))
    body = "".join(f"<tr>{cells(r, numeric)}</tr>" for r in rows)
    return f'<table id="{table_id}"><tr>{cells(header, numeric, "th")}</tr>{body}</table>'


def page(title: str, intro: list[str], sections: list[Section], seconds: float) -> str:
    """The whole page."""
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro]
    toc = "".join(f'<li><a href="#s{k}">{html.escape(s.title)}</a> <span class=took>{s.seconds:.1f} s</span></li>'
                  for k, s in enumerate(sections))
    parts.append(f"<ul>{toc}</ul><p class=note>The report took {seconds:.1f} s.</p>")
    for k, s in enumerate(sections):
        parts.append(f'<section><h2 id="s{k}">{html.escape(s.title)} <span class=took>(took {s.seconds:.2f} s)</span></h2>')
        parts += s.body
        if s.data:
            links = ", ".join(f'<a href="{html.escape(d)}">{html.escape(d)}</a>' for d in s.data)
            parts.append(f"<p class=note>Data behind it: {links}</p>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
