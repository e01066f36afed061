"""``tinyvae report RUN [RUN ...]``: one self-contained HTML page comparing runs (every image
embedded, nothing fetched): what each run is, its final metrics side by side, the learning
curves overlaid, and each run's samples and reconstructions."""
from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
import time

from . import __version__, plots, records, saved_run

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.runs { display: flex; flex-wrap: wrap; gap: 1.5em; }
.run { flex: 1 1 360px; } .run img { max-width: 100%; border: 1px solid #ddd; }
img.wide { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def _image(path: str, alt: str, cls: str = "") -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    kind = "jpeg" if path.lower().endswith((".jpg", ".jpeg")) else "png"
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/{kind};base64,{data}">'


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else str(value)
    return html.escape(str(value))


def _describe(state: dict, differs: set) -> str:
    """One line: the model and every option (bold where the runs differ), data and schedule."""
    config = state["model_config"]
    options = ", ".join(f"<b>{html.escape(f'{k}={v}')}</b>" if k in differs else html.escape(f"{k}={v}")
                        for k, v in config["options"].items())
    run = state["run"]
    return (f"<b>{html.escape(config['name'])}</b> ({options}) on {html.escape(str(run['dataset']))}, "
            f"{state['epoch']} epochs, batch {run['batch_size']}, lr {run['lr']}, seed {run['seed']}")


def write_report(run_dirs: list, path: str) -> None:
    """The comparison page of ``run_dirs``, written atomically to ``path``."""
    from .atomic import write_atomic
    states = {d: saved_run.load(d) for d in run_dirs}
    names = {d: os.path.basename(os.path.normpath(d)) or d for d in run_dirs}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tinyvae report: "
             f"{html.escape(', '.join(names.values()))}</title><style>{_STYLE}</style></head><body>",
             f"<h1>tinyvae runs: {html.escape(', '.join(names.values()))}</h1>",
             f"<p class='meta'>written {time.strftime('%Y-%m-%d %H:%M')} by tinyvae {__version__}</p>",
             "<h2>Runs</h2><ul>"]
    values = [s["model_config"]["options"] for s in states.values()]
    differs = {k for k in dict.fromkeys(k for v in values for k in v) if len({repr(v.get(k)) for v in values}) > 1}
    parts += [f"<li><code>{html.escape(d)}</code>: {_describe(s, differs)}</li>" for d, s in states.items()]
    parts.append("</ul><h2>Final metrics</h2>")
    finals = {d: s["history"][-1] if s["history"] else {} for d, s in states.items()}
    keys = [k for k in dict.fromkeys(k for r in finals.values() for k in r)
            if k.startswith(("train_", "test_")) or k in ("active_units", "epoch")]
    parts.append("<table><tr><th>run</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
    for d, record in finals.items():
        parts.append(f"<tr><td>{html.escape(names[d])}</td>"
                     + "".join(f"<td>{_number(record.get(k, ''))}</td>" for k in keys) + "</tr>")
    parts.append("</table><p class='meta'>nats per example; test_elbo is the bound on log p(x), "
                 "test_nll_iwae the IWAE estimate of −log p(x).</p><h2>Learning curves</h2>")
    with tempfile.TemporaryDirectory() as tmp:
        curves = os.path.join(tmp, "curves.png")
        plots.learning_curves({names[d]: s["history"] for d, s in states.items()}, curves)
        parts.append(_image(curves, "learning curves of every run", "wide"))
    parts.append("<h2>Samples and reconstructions</h2><div class='runs'>")
    for d in run_dirs:
        parts.append(f"<div class='run'><h3>{html.escape(names[d])}</h3>")
        for picture, caption in (("samples.png", "samples from the prior"),
                                 ("reconstructions.png", "test images and their reconstructions")):
            if os.path.isfile(os.path.join(d, picture)):
                parts.append(f"<p>{caption}</p>" + _image(os.path.join(d, picture), f"{names[d]}: {caption}"))
        parts.append("</div>")
    parts.append("</div><h2>Configurations</h2>")
    for d in run_dirs:
        config_path = os.path.join(d, records.CONFIG)
        text = open(config_path).read() if os.path.isfile(config_path) else json.dumps(
            {"model": states[d]["model_config"], "run": states[d]["run"]}, indent=2)
        parts.append(f"<details><summary>{html.escape(names[d])}</summary><pre>{html.escape(text)}</pre></details>")
    parts.append("</body></html>\n")
    write_atomic(path, "\n".join(parts).encode())
