"""benchmarks/dedup_timing.py on 40 images built from demo images: the data builder is
deterministic and writes what it plans (exact byte copies, shards and the flat folder agree),
and the side-by-side run prints the table, with the ShardGuard job finding every exact copy."""

import io
import re

import pytest
from PIL import Image

from benchmarks import dedup_timing
from benchmarks.copy_peers import available_peers
from tests.demo_images import demo_images


def _sources(n: int) -> list[Image.Image]:
    return [Image.open(io.BytesIO(d)).convert("RGB") for _, d, _, _ in demo_images(n)]


def test_builder_is_deterministic_and_plants_the_copies():
    sources = _sources(4)
    a = dedup_timing.build_images(sources, 60, seed=3, copy_share=0.2, workers=1)
    b = dedup_timing.build_images(sources, 60, seed=3, copy_share=0.2, workers=1)
    assert a.datas == b.datas and a.copy_of == b.copy_of
    copies = [k for k, o in enumerate(a.copy_of) if o >= 0]
    assert copies and all(a.datas[k] == a.datas[a.copy_of[k]] and a.copy_of[a.copy_of[k]] < 0 for k in copies)
    originals = [a.datas[k] for k, o in enumerate(a.copy_of) if o < 0]
    assert len(set(originals)) == len(originals)  # transformed images are all different bytes
    for data in originals:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and 256 <= max(im.size) <= 768
    assert dedup_timing.build_images(sources, 60, seed=4, copy_share=0.2, workers=1).datas != a.datas


@pytest.mark.beam  # `shardguard run` as a subprocess
def test_side_by_side_run_prints_the_table_and_finds_the_exact_copies(tmp_path, capsys):
    args = ["--images", "40", "--sources", "6", "--per-shard", "20", "--copy-share", "0.15", "--keep", str(tmp_path)]
    skip_imm = bool(available_peers()["immaculate_sscd_distilled"])
    code = dedup_timing.main(args + (["--skip-immaculate"] if skip_imm else []))
    text = capsys.readouterr().out
    assert code == 0, text
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.tar")) == ["00000.tar", "00001.tar"]
    assert len(list((tmp_path / "flat").glob("*.jpg"))) == 40
    sg = re.search(r"^ShardGuard dedup-only job\s+([\d.]+)\s+([\d.]+)\s+(\S+)$", text, re.M)
    assert sg and float(sg.group(1)) > 0, text
    ts, plan = dedup_timing.read_data(tmp_path)
    n_copies = sum(o >= 0 for o in ts.copy_of)
    assert n_copies > 0
    assert f"exact byte copies found with their original: {n_copies} of {n_copies}" in text
    facts = dedup_timing.run_facts(tmp_path / "shardguard-out", ts, plan["per_shard"])
    assert facts["exact_found"] == facts["exact_copies"] == n_copies and facts["ok"] == 40
    assert re.search(r"near pairs verified by the check: \d+ checked, \d+ rejected", text), text
    assert re.search(r"^start: \d+ logical CPUs .* load average", text, re.M)
    if not skip_imm:
        runs = re.findall(r"^immaculate sscd_distilled \(run [12]\)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)$", text, re.M)
        assert len(runs) == 2, text
        mean = sum(float(w) for w, _ in runs) / 2
        assert abs(float(sg.group(3)) - float(sg.group(1)) / mean) < 0.1 * float(sg.group(3)) + 0.01
