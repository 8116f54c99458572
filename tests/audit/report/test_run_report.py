"""The HTML audit report (audit/report/run_report.py) on a real audited folder: the job writes it, every
section is there, untrusted captions are escaped, charts are inline PNGs, nothing is fetched
from a network, and what it shows agrees with the store. The folder is built once per session
by tests/report_fixture.py (real job: ingest, dedup, memorization, perturbation tests)."""

import base64
import html
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.embeddings.embedder_specs import EmbedConfig
from audit.io.output_dir import OutputDir
from audit.report.run_report import SECTIONS, write_report
from audit.io.store import query
from pipelines.cli import main
from pipelines.config import JobConfig
from pipelines.job import run_ingest
from tests.report_fixture import XSS_CAPTION, XSS_COPY_KEY, XSS_KEY, audited_output

pytestmark = pytest.mark.beam  # runs Beam jobs (tests/conftest.py)

IMG_SRC = re.compile(r'<img\b[^>]*\bsrc="([^"]*)"')


@pytest.fixture(scope="module")
def audited(demo_sample, tmp_path_factory):
    return audited_output(tmp_path_factory)


@pytest.fixture(scope="module")
def page(audited) -> str:
    out, summary = audited
    assert summary.report == str(out / "reports" / "index.html")
    return Path(summary.report).read_text(encoding="utf-8")


def section_html(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_every_section_is_present_with_a_heading(page):
    for sid, _ in SECTIONS:
        assert section_html(page, sid).startswith("<h2>"), sid


def test_untrusted_captions_are_escaped_never_raw(page, audited):
    out, _ = audited
    _, [(caption,)] = query(out, f"SELECT caption FROM samples WHERE key = '{XSS_COPY_KEY}'")
    assert caption == XSS_CAPTION
    assert html.escape(XSS_CAPTION, quote=True) in section_html(page, "duplicates")
    lowered = page.lower()
    assert "<script" not in lowered and "<img src=x" not in lowered and "javascript:" not in lowered
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", lowered)  # no event-handler attribute anywhere


def test_every_image_is_an_inline_png_and_charts_decode(page):
    srcs = IMG_SRC.findall(page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    charts = re.findall(r'<img class="chart"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(charts) == 2  # feature histograms and probe accuracies
    for data in charts:
        raw = base64.b64decode(data, validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        im = Image.open(io.BytesIO(raw))
        im.verify()
        assert im.width > 200 and im.height > 150


def test_no_network_resource_is_referenced(page):
    assert not re.search(r"""\b(src|href|action|poster)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(|@import|<link\b|<script\b|<iframe\b|<object\b|<embed\b", page, re.I)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))


def test_sections_agree_with_the_store(page, audited):
    out, summary = audited
    assert summary.run_id in section_html(page, "summary")
    _, [(n_clusters,)] = query(out, "SELECT count(DISTINCT (kind, cluster)) FROM duplicates")
    dup = section_html(page, "duplicates")
    assert n_clusters > 0 and dup.count("<h3>") == min(20, n_clusters)
    assert dup.count('<span class="badge kept">') >= 1 and 'class="badge dropped"' in dup
    _, flagged = query(out, "SELECT shard || '/' || key FROM memorization WHERE flagged ORDER BY score DESC")
    mem = section_html(page, "memorization")
    assert flagged, "the random checkpoint's 1% cut flags some samples"
    assert all(html.escape(k) in mem for (k,) in flagged[:20])
    assert mem.count("<tr>") == 1 + min(20, len(flagged))
    _, tests = query(out, "SELECT test FROM perturbation_tests WHERE scope = 'dataset'")
    assert tests and all(t in section_html(page, "perturbations") for (t,) in tests)
    _, errors = query(out, "SELECT DISTINCT error_type FROM errors")
    assert errors and all(e in section_html(page, "errors") for (e,) in errors)
    _, [(n_changes,)] = query(out, "SELECT count(*) FROM run_changes")
    changes = section_html(page, "changes")
    assert ("Nothing found" in changes) == (n_changes == 0)
    assert "Nothing found" in section_html(page, "replication")  # no replication check was run


def test_report_command_with_top_and_destination(audited, tmp_path, capsys):
    out, _ = audited
    assert main(["report", "--out", str(out), "--to", str(tmp_path / "rep"), "--top", "2"]) == 0
    path = tmp_path / "rep" / "index.html"
    assert str(path) in capsys.readouterr().out
    small = path.read_text(encoding="utf-8")
    assert section_html(small, "duplicates").count("<h3>") == 2
    assert section_html(small, "memorization").count("<tr>") <= 3
    assert len(small) < len((out / "reports" / "index.html").read_text(encoding="utf-8"))


def test_report_into_a_folder_that_is_not_ours_is_refused_and_left_untouched(audited, tmp_path, capsys):
    out, _ = audited
    home = tmp_path / "home"
    home.mkdir()
    (home / "index.html").write_text("my own page")
    assert main(["report", "--out", str(out), "--to", str(home)]) == 2
    err = capsys.readouterr().err
    assert str(home) in err and err.count("\n") == 1
    assert [p.name for p in home.iterdir()] == ["index.html"] and (home / "index.html").read_text() == "my own page"
    assert main(["report", "--out", str(tmp_path / "not-an-audit")]) == 2  # nothing to report on, nothing created
    assert not (tmp_path / "not-an-audit").exists()


def test_moved_shards_leave_thumbnails_out_with_a_note(audited, tmp_path):
    out, _ = audited

    def gone(uri):  # the tars were moved away after the run
        return open(uri + ".moved-away", "rb")

    page = Path(write_report(out, tmp_path, opener=gone)).read_text(encoding="utf-8")
    assert "training images could not be read back" in page and "(no image)" in page
    assert '<img class="chart"' in page


def test_empty_folder_says_nothing_found_in_every_section(tmp_path):
    page = Path(write_report(tmp_path)).read_text(encoding="utf-8")
    for sid, _ in SECTIONS:
        assert "Nothing found" in section_html(page, sid), sid
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing")


def test_config_report_false_writes_no_page(broken_dir, tmp_path):
    s = run_ingest(str(broken_dir), str(tmp_path), JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False),
                                                             report=False))
    assert s.report == "" and not (tmp_path / "reports" / "index.html").exists()


def test_run_command_prints_the_report_path_and_lists_its_errors(broken_dir, tmp_path, capsys):
    assert main(["run", "--input", str(broken_dir / "bad_mixed.tar"), "--out", str(tmp_path), "-q", "--no-embed"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("report:")]
    assert lines == [f"report:   {tmp_path.resolve() / 'reports' / 'index.html'}"]
    page = (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")
    _, errors = query(tmp_path, "SELECT error_type, count(*) FROM errors GROUP BY ALL")
    errs = section_html(page, "errors")
    assert errors and all(f"<td>{t}</td><td>{n}</td>" in errs for t, n in errors)


def test_replication_pairs_are_shown_side_by_side(audited, tmp_path, capsys):
    """A real `shardguard replication` check (SSCD, on a copy of the audited folder): generated
    copies of two training images and one noise image, with a hostile prompt."""
    out, _ = audited
    against = tmp_path / "out"
    shutil.copytree(out, against)
    _, rows = query(against, f"SELECT shard, key, image_offset, image_bytes FROM samples WHERE status = 'ok' "
                             f"AND key IN ('{XSS_KEY}', '00000018') ORDER BY key")
    gen = tmp_path / "gen"
    gen.mkdir()
    uris = {m["shard"]: m["uri"] for m in OutputDir(against).markers("ingest")}
    assert len(rows) == 2
    for i, (shard, _, offset, size) in enumerate(rows):
        with open(uris[shard], "rb") as f:
            f.seek(offset)
            Image.open(io.BytesIO(f.read(size))).convert("RGB").resize((200, 200)).save(gen / f"copy-{i}.png")
        (gen / f"copy-{i}.txt").write_text(XSS_CAPTION)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(gen / "noise.png")
    assert main(["replication", "--generated", str(gen), "--against", str(against), "--baseline-samples", "50"]) == 0
    assert main(["report", "--out", str(against)]) == 0
    capsys.readouterr()
    rep = section_html((against / "reports" / "index.html").read_text(encoding="utf-8"), "replication")
    _, checked = query(against, "SELECT generated, top1_key, replicated FROM replication ORDER BY top1_similarity DESC")
    assert {g for g, _, _ in checked[:2]} == {"copy-0.png", "copy-1.png"}
    assert all(html.escape(g) in rep for g, _, _ in checked)
    assert rep.count("<b>replicated</b>") == sum(r for _, _, r in checked) >= 2
    assert rep.count('src="data:image/png;base64,') == 2 * len(checked)  # generated and training image per pair
    assert html.escape(XSS_CAPTION) in rep and "<script" not in rep


def test_a_run_over_the_failure_threshold_still_writes_the_report(broken_dir, tmp_path):
    from audit.runs.failure_threshold import TooManyFailures
    from audit.ingest.sample_validation import IngestLimits
    cfg = JobConfig(progress_seconds=0, embed=EmbedConfig(enabled=False), ingest=IngestLimits(max_failed_fraction=0.1))
    with pytest.raises(TooManyFailures):
        run_ingest(str(broken_dir / "bad_mixed.tar"), str(tmp_path), cfg)
    page = (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")
    assert "<td>status</td><td>failed</td>" in section_html(page, "summary")
    assert "CorruptImage" in section_html(page, "errors")


def test_the_early_stopping_recommendation_is_shown_escaped_and_a_broken_export_is_left_out(audited, tmp_path):
    import json
    from audit.io.output_dir import PERTURBATION_EXPORT
    out, _ = audited
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    export = copy / PERTURBATION_EXPORT
    record = json.loads(export.read_text())
    rec = {"data": XSS_CAPTION, "stop_at_epoch": 3, "of_epochs": 8, "reference_accuracy_at_peak": 0.71,
           "final_reference_accuracy": 0.42, "epoch_accuracy": [0.5, 0.6, 0.71, 0.6, 0.5, 0.45, 0.43, 0.42]}
    export.write_text(json.dumps({**record, "training_recommendation": rec}))
    body = section_html(Path(write_report(copy, tmp_path / "r1")).read_text(encoding="utf-8"), "perturbations")
    assert "early stopping" in body and "3 of 8" in body and "0.71" in body and "0.42" in body
    assert html.escape(XSS_CAPTION, quote=True) in body and "<script" not in body.lower()
    for broken in ("{not json", json.dumps({**record, "training_recommendation": {**rec, "stop_at_epoch": "<b>"}})):
        export.write_text(broken)
        body = section_html(Path(write_report(copy, tmp_path / "r2")).read_text(encoding="utf-8"), "perturbations")
        assert "early stopping" not in body and "<b>" not in body
