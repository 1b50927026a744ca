"""omsf2.lineage: a listing changes with any file added, removed, renamed or changed, and with nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from omsf2.lineage import SCOPE_CSV, data_listing, files_sha256, folder_files, folder_sha256, record_sha256


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(b"one")
    (root / "b.png").write_bytes(b"two")
    return root


def test_listing_sees_every_change(folder: Path) -> None:
    base = folder_sha256(folder)
    assert base["files"] == 2 and base["bytes"] == 6 and base["path"] == str(folder.resolve())
    (folder / ".hidden").write_text("ignored")
    (folder / ".git").mkdir()
    (folder / ".git" / "x").write_text("ignored")
    assert folder_sha256(folder)["sha256"] == base["sha256"]
    (folder / "b.png").write_bytes(b"twO")
    changed = folder_sha256(folder)["sha256"]
    assert changed != base["sha256"]
    (folder / "b.png").write_bytes(b"two")
    (folder / "b.png").rename(folder / "c.png")
    assert folder_sha256(folder)["sha256"] not in (base["sha256"], changed)
    (folder / "c.png").rename(folder / "b.png")
    (folder / "a" / "2.png").write_bytes(b"")
    assert folder_sha256(folder)["sha256"] != base["sha256"]
    assert folder_files(folder) == ["a/1.png", "a/2.png", "b.png"]


def test_file_lists_name_a_missing_file(folder: Path) -> None:
    assert files_sha256(folder, ["b.png", "a/1.png"]) == files_sha256(folder, ["a/1.png", "b.png"])
    with pytest.raises(FileNotFoundError):
        files_sha256(folder, ["gone.png"])


def test_data_listing_kinds(folder: Path, tmp_path: Path) -> None:
    assert data_listing(folder)["kind"] == "folder"
    csv_root = tmp_path / "chexpert"
    csv_root.mkdir()
    (csv_root / "train.csv").write_text("Path\n")
    (csv_root / "img.jpg").write_bytes(b"x")
    rec = data_listing(csv_root)
    assert rec["kind"] == "csv-folder" and rec["files"] == 1 and rec["scope"] == SCOPE_CSV
    assert data_listing(csv_root / "train.csv")["kind"] == "file"
    with pytest.raises(ValueError, match="neither a folder nor a file"):
        data_listing(tmp_path / "nothing")


def test_record_hash_is_canonical() -> None:
    assert record_sha256({"b": 1, "a": [1.5, None]}) == record_sha256({"a": [1.5, None], "b": 1})
    assert record_sha256({"a": 1}) != record_sha256({"a": 2})
