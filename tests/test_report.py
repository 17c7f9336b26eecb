"""`lessdb.report` and `lessdb report` on a real workspace built by the real pipeline with the tiny model
(tests/report_workspace.py): recomputed pool scores against the recorded selection and an independent numpy
computation, summaries against plain SQL over the audit views, the self-contained HTML page, and (when Debian's
chromium is installed) the page rendered in a real headless browser.
"""
from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import MISSING_COMPONENT, REPO, missing, run_cli
from report_workspace import built_workspace

from lessdb import LessdbError, Workspace
from lessdb import report
from lessdb.storage.features import iter_feature_batches
from lessdb.storage.user_sql import run_readonly_sql


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path, info = built_workspace(tmp_path_factory.mktemp("report"))
    return Workspace.open(path), info


def test_fixture_made_every_method(demo):
    _, info = demo
    assert set(info["selections"]) >= {"less", "random", "bm25", "rds"}, info["skipped"]


@pytest.mark.parametrize("method", ["less", "unnormalized"])
def test_pool_scores_reproduce_the_recorded_selection(demo, method):
    ws, info = demo
    data = report.load_selection(ws, info["selections"][method])
    ps = data.pool_scores
    assert ps is not None and ps.valid.all() and len(ps.ids) == data.selection["n_scored"]
    recomputed = ps.as_dict()
    recorded = {m["candidate_id"]: m["score"] for m in data.members}
    scale = max(abs(s) for s in recorded.values())
    for cid, score in recorded.items():   # the selection scored with a float32 GEMM, we in float64
        assert recomputed[cid] == pytest.approx(score, rel=1e-5, abs=1e-6 * scale)
    top = sorted(recomputed, key=lambda c: (-recomputed[c], c))[: data.selection["k"]]
    assert top == [m["candidate_id"] for m in data.members]
    assert [ps.best_subtask[ps.ids.index(m["candidate_id"])] for m in data.members] == \
        [m["best_subtask"] for m in data.members]
    np.testing.assert_allclose(ps.per_checkpoint.sum(axis=1), ps.score, rtol=1e-12)


def test_pool_scores_match_the_paper_formula_in_numpy(demo):
    """Inf(z, Dʲ) = Σᵢ η̄ᵢ cos(mean_{z'} û(z'), x̂ᵢ(z)), straight from the stored vectors (paper aggregation)."""
    ws, info = demo
    data = report.load_selection(ws, info["selections"]["less"])
    sel, ps = data.selection, data.pool_scores
    fsid = sel["feature_set_id"]
    val_ids = sel["params"]["validation_examples"]
    pick = ps.ids[:5] + [data.members[0]["candidate_id"]]
    expected = {c: np.zeros(len(ps.subtasks)) for c in pick}
    for epoch, w in zip(sel["checkpoints"], sel["weights"]):
        val = {i: v for ids, vecs in iter_feature_batches(ws, fsid, epoch, "validation") for i, v in zip(ids, vecs)}
        cand = {i: v for ids, vecs in iter_feature_batches(ws, fsid, epoch, "candidate", ids=pick)
                for i, v in zip(ids, vecs)}
        for j, s in enumerate(ps.subtasks):
            g = np.mean([val[i] / np.linalg.norm(val[i]) for i in val_ids[s]], axis=0)
            for c in pick:
                x = cand[c]
                expected[c][j] += w * float(g @ x) / (np.linalg.norm(g) * np.linalg.norm(x))
    for c in pick:
        i = ps.ids.index(c)
        np.testing.assert_allclose(ps.per_subtask[i], expected[c], rtol=1e-5)
        assert ps.score[i] == pytest.approx(expected[c].max(), rel=1e-5)


def test_summaries_agree_with_plain_sql(demo):
    ws, info = demo
    sid = info["selections"]["less"]
    data = report.load_selection(ws, sid, pool_scores=False)
    mix = {r["source_dataset"]: r["n_selected"] for r in report.source_mix(data) if r["n_selected"]}
    sql = run_readonly_sql(ws, f"SELECT source_dataset, n FROM selection_sources WHERE selection_id = '{sid}'")
    assert mix == dict(sql.rows)
    pool = run_readonly_sql(ws, "SELECT source_dataset, count(*) FROM candidates WHERE pool = 'demo' GROUP BY ALL")
    assert {r["source_dataset"]: r["n_pool"] for r in report.source_mix(data)} == dict(pool.rows)
    assert sum(r["share_selected"] for r in report.source_mix(data)) == pytest.approx(1.0)
    lengths = report.completion_lengths([data])
    assert sorted(lengths[data.label]) == sorted(r["completion_chars"] for r in data.members)
    assert len(lengths["pool (all candidates)"]) == 90


def test_jaccard_and_subtask_counts(demo):
    ws, info = demo
    refs = [info["selections"][m] for m in ("less", "bm25", "random")]
    rows = run_readonly_sql(ws, "SELECT selection_id, candidate_id, best_subtask FROM selection_members").rows
    sets = {r: {c for s, c, _ in rows if s == r} for r in refs}
    labels, mat = report.jaccard_matrix(ws, refs)
    assert labels == ["arith-less", "arith-bm25", "arith-random"]
    np.testing.assert_allclose(np.diag(mat), 1.0)
    np.testing.assert_allclose(mat, mat.T)
    a, b = sets[refs[0]], sets[refs[1]]
    assert mat[0, 1] == pytest.approx(len(a & b) / len(a | b))
    labels, subtasks, counts = report.subtask_counts(ws, refs)
    assert counts.sum(axis=1).tolist() == [len(sets[r]) for r in refs]
    assert counts[2, subtasks.index("(none)")] == len(sets[refs[2]])   # random has no best subtask


def test_checkpoint_contributions(demo):
    ws, info = demo
    data = report.load_selection(ws, info["selections"]["less"])
    rows = report.checkpoint_contributions(data)
    assert [r["checkpoint"] for r in rows] == data.selection["checkpoints"]
    assert sum(r["share_of_selected_score"] for r in rows) == pytest.approx(1.0)
    assert all(0 <= r["top_k_overlap"] <= data.selection["k"] for r in rows)


def test_examples_per_subtask(demo):
    ws, info = demo
    data = report.load_selection(ws, info["selections"]["less"])
    rows = report.examples_per_subtask(ws, data, n=2)
    for s in data.pool_scores.subtasks:
        top = [r for r in rows if r["subtask"] == s and r["end"] == "top"]
        bottom = [r for r in rows if r["subtask"] == s and r["end"] == "bottom"]
        assert len(top) == 2 and len(bottom) == 2
        assert min(r["score"] for r in top) >= max(r["score"] for r in bottom)
        assert all(r["text"].startswith("user: ") and "assistant: " in r["text"] for r in top + bottom)
    # a baseline without pool scores: first and last members per best subtask
    bm25 = report.load_selection(ws, info["selections"]["bm25"])
    assert bm25.pool_scores is None and bm25.notes
    assert {r["selected"] for r in report.examples_per_subtask(ws, bm25)} == {True}


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_report_cli_writes_one_self_contained_page(demo, tmp_path):
    ws, info = demo
    out = tmp_path / "report.html"
    proc = run_cli("report", "arith-less", "--output", out, "--json", workspace=ws.root)
    assert '"images": 6' in proc.stdout
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page and not re.search(r"""(src|href)=['"]?(https?:|//|file:)""", page)
    pngs = _pngs(page)
    assert len(pngs) == 6 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    from PIL import Image

    for p in pngs:
        w, h = Image.open(io.BytesIO(p)).size
        assert w >= 500 and h >= 200
    sid = info["selections"]["less"]
    for text in (sid, "Provenance", "table versions read", info["feature_set_id"], "Scores of the 90 scored",
                 "Source-dataset mix", "Top and bottom examples per subtask", "arith-random", "arith-rds",
                 "Top members, explained"):
        assert text in page, text
    # the explanation section's rows are the stored explanations of the top members
    rows = run_readonly_sql(ws, f"SELECT rank, subtask FROM selection_explain WHERE selection_id = '{sid}' "
                                "AND is_best_subtask ORDER BY rank").as_dicts()
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert oct(out.stat().st_mode & 0o777) != "0o600"


def test_report_of_a_baseline_and_bad_references(demo, tmp_path):
    ws, info = demo
    page = report.build_report(ws, "arith-random", compare=[])
    assert len(_pngs(page)) == 3          # scores (recorded histogram), source mix, lengths; no comparison
    assert "Top members, explained" not in page   # no gradient score to explain
    assert "recorded 20-bin histogram" in page
    with pytest.raises(LessdbError, match="no selection"):
        report.build_report(ws, "no-such-selection")
    out = tmp_path / "r.html"
    proc = run_cli("report", "no-such-selection", "--output", out, workspace=ws.root, check=False)
    assert proc.returncode != 0 and "no selection" in proc.stderr and not out.exists()
    assert not list(tmp_path.glob(".r.html.*"))


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason=missing(MISSING_COMPONENT, "chromium", "apt-get install -y chromium (Debian's package)"))
def test_report_renders_in_headless_chromium(demo, tmp_path):
    from PIL import Image

    ws, _ = demo
    out = tmp_path / "report.html"
    report.write_report(ws, "arith-less", out)
    shot = tmp_path / "shot.png"
    subprocess.run(["bash", str(REPO / "bench" / "screenshot_report.sh"), str(out), str(shot), "1200x2400"],
                   check=True, capture_output=True, timeout=180)
    im = Image.open(shot).convert("RGB")
    assert im.size == (1200, 2400)
    px = np.asarray(im).reshape(-1, 3).astype(int)
    red = ((px[:, 0] > 180) & (px[:, 1] < 80) & (px[:, 2] < 80)).mean()   # selected bars of the score plot
    assert len(np.unique(px[::7], axis=0)) > 50 and red > 0.001, "the screenshot shows no plots"
