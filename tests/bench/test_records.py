"""bench/records.py: every record names its writer; old records get it from the table, by script, not by hand."""

from __future__ import annotations

import json
from pathlib import Path


def test_stamp_adds_the_writer_from_the_record_and_check_accepts_it(bench_script, tmp_path: Path,
                                                                     monkeypatch) -> None:  # fmt: skip
    records = bench_script("records.py")
    monkeypatch.setattr(records, "RESULTS", tmp_path)
    (tmp_path / "stability-ema-span-x.json").write_text(json.dumps({"scenario": "stability-ema-span",
                                                                     "seeds": [{"seed": 0}, {"seed": 2}]}))  # fmt: skip
    (tmp_path / "kernels-x.json").write_text(json.dumps({"command": "python bench/kernel_bench.py --device cpu"}))
    (tmp_path / "mystery-x.json").write_text(json.dumps({"scenario": "mystery"}))
    own = {"written_by": {"script": "bench/int8_cxr.py", "command": "python bench/int8_cxr.py --ckpt c.pt"}}
    (tmp_path / "int8-cxr-x.json").write_text(json.dumps(own))
    changed = records.stamp()
    assert sorted(p.name for p in changed) == ["kernels-x.json", "stability-ema-span-x.json"]
    wb = json.loads((tmp_path / "stability-ema-span-x.json").read_text())["written_by"]
    assert wb == {"script": "bench/stability.py", "command": "python bench/stability.py --tag ema-span --seeds 0,2",
                  "backfilled": True}  # fmt: skip
    kernels = json.loads((tmp_path / "kernels-x.json").read_text())
    assert kernels["written_by"]["command"] == "python bench/kernel_bench.py --device cpu"
    assert kernels["command"] == "python bench/kernel_bench.py --device cpu"  # nothing else changes
    assert records.problems(tmp_path / "int8-cxr-x.json") is None
    assert records.problems(tmp_path / "mystery-x.json") == "no written_by.script / written_by.command"


def test_a_writer_that_is_not_in_the_repository_is_refused(bench_script, tmp_path: Path) -> None:
    records = bench_script("records.py")
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"written_by": {"script": "bench/gone.py", "command": "python bench/gone.py"}}))
    assert "is not a file in the repository" in records.problems(path)
    path.write_text(json.dumps({"written_by": {"script": "bench/int8_cxr.py", "command": "python other.py"}}))
    assert "does not run bench/int8_cxr.py" in records.problems(path)


def test_written_by_names_the_script_and_its_arguments(bench_script) -> None:
    common = bench_script("common.py")
    wb = common.written_by(str(common.REPO / "bench" / "int8_cxr.py"), ["--ckpt", "a b.pt"])
    assert wb == {"script": "bench/int8_cxr.py", "command": "python bench/int8_cxr.py --ckpt 'a b.pt'"}


def test_every_committed_record_names_its_writer(bench_script) -> None:
    records = bench_script("records.py")
    bad = {p.name: why for p in sorted(records.RESULTS.glob("*.json")) if (why := records.problems(p))}
    assert not bad, bad
