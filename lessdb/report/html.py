"""`lessdb report SEL --output report.html`: one self-contained HTML page (no scripts, no external files; the
plots are embedded as base64 PNG) with a selection's provenance, summary tables, plots and examples.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import io
import json
from pathlib import Path

from .. import __version__
from ..output_file import STDOUT, check_destination, is_stdout, write_atomically, write_stdout
from . import plots
from .data import (SelectionData, checkpoint_contributions, completion_lengths, examples_per_subtask,
                   jaccard_matrix, length_summary, load_selection, selections_for_task, source_mix, subtask_counts)

CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1080px;
       color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px;
margin-top: 1.8em; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 190px; } code, pre { font-family: "DejaVu Sans Mono", Menlo, monospace; font-size: 0.85em; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; max-width: 560px; }
figure { margin: 12px 0 20px; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } .note { background: #fff8e1; border-left: 4px solid #f0b400;
padding: 6px 10px; margin: 8px 0; font-size: 0.9em; } .yes { color: #2ca02c; font-weight: bold; }
"""


def explanation_rows(ws, sel: dict, top: int = 5) -> list[dict]:
    """The report's explanation table for the top members (none for selections without gradient scores)."""
    from ..selection.explain import explainable, explain_selection

    if not explainable(sel):
        return []
    rows = []
    for m in explain_selection(ws, sel["selection_id"], top=top, top_examples=2)["members"]:
        best = m["subtasks"][0]
        rows.append({"rank": m["rank"], "score": m["recorded_score"], "best_subtask": best["subtask"],
                     "checkpoint parts": " + ".join(f"{p['weight']:.3g}×{p['cosine']:.4f}"
                                                    for p in best["checkpoints"]),
                     "top validation examples": "; ".join(f"{x['example'] or x['example_key']} "
                                                          f"({x['contribution']:+.3g})" for x in best["top_examples"]),
                     "candidate_id": m["candidate_id"]})
    return rows


def build_report(ws, ref: str, compare: list[str] | None = None, examples: int = 2) -> str:
    """The report page for selection `ref` as an HTML string. `compare`: other selections (ids or names) for
    the comparison plots; default the newest selection of every other method for the same task and pool."""
    data = load_selection(ws, ref)
    sel = data.selection
    others = _comparison_set(ws, data, compare)
    parts = [f"<h1>Selection report: {_e(data.label)}</h1>",
             f"<p class='sub'>{_e(sel['method'])} on task <b>{_e(sel['task'])}</b>, pool "
             f"<b>{_e((sel['params'] or {}).get('pool'))}</b> — k = {sel['k']:,} of {sel['n_scored']:,} scored "
             f"candidates. Generated {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by lessdb {__version__}.</p>"]
    parts += [f"<div class='note'>{_e(n)}</div>" for n in data.notes]
    parts += ["<h2>Provenance</h2>", _kv_table(_provenance(sel))]

    parts += ["<h2>Summary</h2>", "<h3>Source-dataset mix (selection vs filtered pool)</h3>",
              _table(source_mix(data), ["source_dataset", "n_selected", "share_selected", "n_pool", "share_pool"],
                     pct=("share_selected", "share_pool")),
              "<h3>Lengths in characters (selection vs filtered pool)</h3>", _table(_length_rows(data),
              ["column", "set", "n", "mean", "median", "p10", "p90"])]

    parts += ["<h2>Plots</h2>",
              _figure(plots.score_distribution(data),
                      "Every scored candidate's score; the dashed line is the cut-off (the k-th score)."),
              _figure(plots.source_mix_plot(data), "Share of each source dataset in the filtered pool and in the "
                      "selection; numbers are counts.")]
    lengths = completion_lengths([data] + others)
    missing_ablation = "unnormalized" not in {d.selection["method"] for d in [data] + others}
    methods = {d.label: d.selection["method"] for d in [data] + others}
    parts.append(_figure(plots.completion_lengths_plot(lengths, "Completion length: pool vs selections", methods),
                         "Boxes: quartiles; diamond: mean. The paper's Table 12: LESS with unnormalized gradients "
                         "picks much shorter completions." + (" (No unnormalized-gradient selection for this task "
                                                               "in the workspace.)" if missing_ablation else "")))
    fig = plots.checkpoint_plot(data)
    if fig is not None:
        parts += [_figure(fig, "Mean per-checkpoint term of the score, selected vs pool; tick labels give η̄, the "
                          "checkpoint's share of the selected examples' total score, and how many of the k it "
                          "would pick on its own."),
                  _table(checkpoint_contributions(data), ["checkpoint", "eta_bar", "mean_term_selected",
                                                          "mean_term_pool", "share_of_selected_score",
                                                          "top_k_overlap"], pct=("share_of_selected_score",))]
    if others:
        refs = [data.selection_id] + [d.selection_id for d in others]
        labels, mat = jaccard_matrix(ws, refs)
        mine = {r["candidate_id"] for r in data.members}
        parts += ["<h3>Compared with</h3>", _table(
            [{"selection": d.label, "selection_id": d.selection_id, "method": d.selection["method"],
              "k": d.selection["k"], "shared members": len(mine & {r["candidate_id"] for r in d.members}),
              "Jaccard": float(mat[0, i + 1])} for i, d in enumerate(others)],
            ["selection", "selection_id", "method", "k", "shared members", "Jaccard"])]
        parts.append(_figure(plots.jaccard_plot(labels, mat), "Pairwise Jaccard overlap of the member sets."))
        parts.append(_figure(plots.subtask_counts_plot(*subtask_counts(ws, refs),
                                                       methods=[d.selection["method"] for d in [data] + others]),
                             "Members per best-matching subtask."))

    parts += _validation_parts(ws, data.selection_id)
    explained = explanation_rows(ws, sel)
    if explained:
        parts += ["<h2>Top members, explained</h2>",
                  "<p class='sub'>Each score is its best subtask's sum over checkpoints of η̄ᵢ × cosine; the "
                  "validation examples listed contributed most to that subtask (`lessdb explain`, the "
                  "<code>selection_explain</code> view).</p>",
                  _table(explained, ["rank", "score", "best_subtask", "checkpoint parts", "top validation examples",
                                     "candidate_id"])]
    parts.append(f"<h2>Top and bottom examples per subtask</h2>")
    rows = examples_per_subtask(ws, data, n=examples)
    parts.append(_table(rows, ["subtask", "end", "score", "selected", "source_dataset", "completion_chars", "text"],
                        pre=("text",), flag=("selected",)))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>lessdb report {_e(data.label)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _validation_parts(ws, selection_id: str) -> list[str]:
    """The newest complete `lessdb validate` of the selection: its verdicts and their intervals."""
    from ..storage.meta_validations import list_validations

    done = [v for v in list_validations(ws, selection_id) if v["status"] == "complete"]
    if not done:
        return ["<h2>Does it pay off?</h2><p class='sub'>Not validated yet: <code>lessdb validate "
                f"{_e(selection_id)}</code> trains on it and on random, BM25, RDS+, hybrid and full-pool "
                "comparisons and scores held-out items of its target.</p>"]
    v = done[-1]
    cost = v.get("cost") or {}
    ratio = cost.get("selection_to_tuning_ratio")
    parts = ["<h2>Does it pay off?</h2>",
             f"<p class='sub'>Validation {_e(v['validation_id'])}: {v['items']['n_items']} held-out "
             f"{_e(v['task'])} items ({_e(v['items']['source'])}), {v['config']['seeds']} training seeds, preset "
             f"{_e(v['config']['preset'])}" + (f"; selection-to-tuning ratio {ratio:.2f}" if ratio else "") +
             ".</p>",
             "<ul>" + "".join(f"<li>{_e(r['line'])}</li>" for r in v["results"]) + "</ul>",
             _figure(plots.validation_plot(v["results"]), "The selection's improvement over each comparison with "
                     "its paired-bootstrap 95% interval (items × seeds); right of the dashed line is better.")]
    return parts


def write_report(ws, ref: str, output: str | Path, compare: list[str] | None = None, examples: int = 2) -> dict:
    """Write the report page to `output` atomically (a temporary file renamed into place; an existing report
    is replaced). The destination is checked before the page is built."""
    to_stdout = is_stdout(output)
    out = None if to_stdout else check_destination(output, force=True, workspace=ws)
    page = build_report(ws, ref, compare=compare, examples=examples)
    data = page.encode("utf-8")
    if to_stdout:
        write_stdout(lambda fh: fh.write(data))
    else:
        write_atomically(out, lambda fh: fh.write(data), overwrite=True)
    return {"output": STDOUT if to_stdout else str(out), "bytes": len(data),
            "images": page.count("data:image/png;base64,")}


# -- pieces ------------------------------------------------------------------------------------------------------
def _comparison_set(ws, data: SelectionData, compare: list[str] | None) -> list[SelectionData]:
    if compare is None:
        sel = data.selection
        by_method = selections_for_task(ws, sel["task"], (sel["params"] or {}).get("pool"))
        by_method.pop(sel["method"], None)
        compare = list(by_method.values())
    return [load_selection(ws, r, pool_scores=False) for r in compare if r != data.selection_id]


def _provenance(sel: dict) -> list[tuple[str, object]]:
    params = {k: v for k, v in (sel["params"] or {}).items() if k not in ("score_histogram", "validation_examples")}
    val = (sel["params"] or {}).get("validation_examples")
    rows = [("selection id", sel["selection_id"]), ("name", sel["name"]),
            ("task", f"{sel['task']} (hash {sel['task_hash']})"), ("method", sel["method"]),
            ("k / percentage", f"{sel['k']:,}" + (f" ({100 * sel['percentage']:g}%)" if sel["percentage"] else "")),
            ("scored / unscorable", f"{sel['n_scored']:,} / {sel['n_unscorable']:,}"),
            ("SQL filter", sel["sql_filter"] or "(none)"), ("warmup run", sel["run_id"]),
            ("feature set", sel["feature_set_id"]), ("checkpoints", sel["checkpoints"]),
            ("weights (η̄ per checkpoint)", sel["weights"]), ("sketch", sel["sketch"]),
            ("table versions read", sel["table_versions"]), ("seed", sel["seed"]), ("parameters", params)]
    if val:
        rows.append(("validation examples", {s: len(v) for s, v in val.items()}))
    rows += [("replay of", sel["replay_of"]), ("lessdb version", sel["lessdb_version"]),
             ("created at", sel["created_at"])]
    return rows


def _length_rows(data: SelectionData) -> list[dict]:
    rows = []
    for col in ("completion_chars", "prompt_chars", "total_chars"):
        for label, src in (("selection", data.members), ("pool", data.pool)):
            rows.append({"column": col, "set": label, **length_summary([r[col] for r in src])})
    return rows


def _figure(fig, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    title = fig.axes[0].get_title() if fig.axes else ""
    return (f"<figure><img alt='{_e(title)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return ""
    if pct and isinstance(value, (int, float)):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _table(rows: list[dict], columns: list[str], pct=(), pre=(), flag=()) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if c in pre:
                cells.append(f"<td><pre>{_e(v)}</pre></td>")
            elif c in flag:
                cells.append(f"<td class='yes'>yes</td>" if v else "<td>no</td>")
            else:
                num = isinstance(v, (int, float)) and not isinstance(v, bool)
                cells.append(f"<td{' class=num' if num else ''}>{_e(_fmt(v, c in pct))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Table:
    """Rows shown as an HTML table in Jupyter (`Table(rows)` as a cell's last line) and as text elsewhere."""

    def __init__(self, rows: list[dict], columns: list[str] | None = None, pct=(), pre=()):
        self.rows, self.pct, self.pre = list(rows), tuple(pct), tuple(pre)
        self.columns = columns or (list(self.rows[0]) if self.rows else [])

    def _repr_html_(self) -> str:
        return _table(self.rows, self.columns, pct=self.pct, pre=self.pre, flag=())

    def __repr__(self) -> str:
        cells = [[_fmt(r.get(c), c in self.pct) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)


def _kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(_fmt(v))}</code></td></tr>" for k, v in rows)
    return f"<table class='kv'><tbody>{body}</tbody></table>"


def _e(value) -> str:
    return _html.escape("" if value is None else str(value), quote=True)
