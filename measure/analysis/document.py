"""Reports as a list of blocks rendered twice, to Markdown and to one self-contained HTML file.

A block is a tuple: ("h", level, text), ("p", text), ("verdict", text) (a bold conclusion),
("ul", [items]), ("table", header, rows) or ("fig", path relative to the report, caption). The
Markdown and the HTML are rendered from the same blocks, so they always say the same thing; both
are written atomically.
"""

import base64
import html
import os
from typing import Sequence

from core import files

_CSS = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
        "img{max-width:100%}.verdict{font-weight:bold}")


def markdown(blocks: list, out_dir: str) -> str:
    """Blocks as Markdown; figures are linked relative to the report."""
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind in ("p", "verdict"):
            out.append(("**" + args[0] + "**") if kind == "verdict" else args[0])
        elif kind == "ul":
            out.append("\n".join("- " + item for item in args[0]))
        elif kind == "table":
            header, body = args
            lines = [header, ["---"] * len(header)] + body
            out.append("\n".join("| " + " | ".join(cell(c) for c in line) + " |" for line in lines))
        elif kind == "fig":
            path = os.path.relpath(os.path.join(out_dir, args[0]), out_dir)
            out.append(f"![{args[1]}]({path})\n\n*{args[1]}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list, out_dir: str) -> str:
    """Blocks as one HTML file, figures embedded as base64 PNG: nothing outside it is needed."""
    e = html.escape
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append(f"<h{args[0]}>{e(args[1])}</h{args[0]}>")
        elif kind in ("p", "verdict"):
            out.append(f'<p class="verdict">{e(args[0])}</p>' if kind == "verdict" else f"<p>{e(args[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in args[0]) + "</ul>")
        elif kind == "table":
            header, body = args
            rows = ["<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in header) + "</tr>"]
            rows += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in line) + "</tr>" for line in body]
            out.append("<table>" + "".join(rows) + "</table>")
        elif kind == "fig":
            path = os.path.join(out_dir, args[0])
            if not os.path.exists(path):
                out.append(f"<p>figure missing: {e(args[0])}</p>")
                continue
            with open(path, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            out.append(f'<figure><img alt="{e(args[1])}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{e(args[1])}</figcaption></figure>")
    title = e(blocks[0][2]) if blocks and blocks[0][0] == "h" else "report"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write(blocks: list, out_dir: str, names: Sequence[str] = ("report.md", "report.html")) -> list[str]:
    """Writes the blocks as Markdown and HTML (names: the two file names) into out_dir; returns the names."""
    markdown_name, html_name = names
    files.atomic_write(os.path.join(out_dir, markdown_name), markdown(blocks, out_dir))
    files.atomic_write(os.path.join(out_dir, html_name), to_html(blocks, out_dir))
    return list(names)
