"""The figures report: one self-contained HTML file (every figure embedded as a PNG data URI, the style inline,
no script from anywhere, no server), with per section the figures, a caption saying what they show, the numbers
behind them, the paper's number where one exists, and how it was made (model, settings, seconds).

A small inline script marks the page when it has loaded (`data-images-ok` / `data-images` / `data-errors` on
<html>), so a headless browser can check that every image decoded and nothing failed.
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path

from kelocate.atomic import write_text
from kelocate.plots.html import img_tag, table
from kelocate.studies.figures.sections import FiguresRun, Section

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; max-height: 640px; border: 1px solid #eee; }
figcaption, .caption { font-size: .92em; color: #333; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.paper { background: #f4f7fb; border-left: 4px solid #5b8bd0; padding: .4em .8em; }
.answer { background: #f6fbf3; border-left: 4px solid #5aa34a; padding: .4em .8em; }
.skipped { color: #8a6d00; } .error { color: #b00020; } .meta { color: #666; font-size: .85em; }
"""

CHECK = """
<script>
window.__errors = 0;
window.addEventListener("error", function () { window.__errors += 1; }, true);
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var root = document.documentElement;
  root.setAttribute("data-images", String(images.length));
  root.setAttribute("data-images-ok", String(ok));
  root.setAttribute("data-errors", String(window.__errors));
});
</script>
"""


def _image(path: Path) -> str:
    return (f"<figure>{img_tag(path.read_bytes(), path.stem, style='')}"
            f'<figcaption class="meta">{html.escape(path.name)} (also in figures/)</figcaption></figure>')


def _section(section: Section) -> str:
    parts = [f'<h2 id="{section.name}">{html.escape(section.title)}</h2>']
    if section.skipped:
        return "".join(parts) + f'<p class="skipped">Not made for this model: {html.escape(section.skipped)}.</p>'
    if section.error:
        return "".join(parts) + f'<p class="error">Failed: {html.escape(section.error)}</p>'
    d = section.description
    how = "read from the cache; computed in" if section.cached else "computed in"
    parts.append(f'<p class="meta">{how} {section.seconds:.0f} s (data: data/{section.name}.json)</p>')
    parts += [_image(p) for p in section.figures if p.suffix == ".png"]
    parts.append(f'<p class="caption">{html.escape(d.caption)}</p>')
    parts += [table(h, r) for h, r in d.tables]
    if d.answer:
        parts.append(f'<p class="answer">{html.escape(d.answer)}</p>')
    if d.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in d.notes) + "</ul>")
    if d.paper:
        parts.append(f'<p class="paper">{html.escape(d.paper)}</p>')
    return "".join(parts)


def render(run: FiguresRun) -> str:
    """The report's HTML text."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    answers = [(s, s.description.answer) for s in run.sections if s.description and s.description.answer]
    toc = "".join(f'<li><a href="#{s.name}">{html.escape(s.title)}</a>'
                  + (" (not made)" if s.skipped else " (failed)" if s.error else "") + "</li>" for s in run.sections)
    settings = table(["setting", "value"], [[k, str(v)] for k, v in run.settings.items() if k != "trained"]
                      + [[f"trained {m}", str(d)] for m, d in run.settings.get("trained", {}).items()])
    body = [
        f"<h1>kelocate: every figure on {html.escape(run.model)}</h1>",
        f'<p class="meta">model fingerprint {html.escape(run.fingerprint)}; written {when}; {run.seconds:.0f} s '
        "this run (cached sections are read, not recomputed). Every number below is measured by kelocate on this "
        "model; the paper's numbers are quoted beside them, from other models.</p>",
        "<h2>Answers</h2><ul>" + "".join(f'<li><a href="#{s.name}">{html.escape(s.title)}</a>: '
                                         f"{html.escape(a)}</li>" for s, a in answers) + "</ul>",
        f"<h2>Contents</h2><ol>{toc}</ol>",
        *(_section(s) for s in run.sections),
        f"<h2>Settings</h2>{settings}",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>kelocate figures: {html.escape(run.model)}</title><style>{STYLE}</style>{CHECK}</head>"
            f"<body>{''.join(body)}</body></html>\n")


def write_report(run: FiguresRun, path: str | Path) -> Path:
    """Write the report at `path`, atomically; returns the path."""
    return write_text(path, render(run))
