"""Every figure README.md and docs/ quote comes from a record that a script in bench/ wrote (issue 24, item 7).

The pages' references to ``bench/results/`` are listed: markdown links, and file names in code spans.
Each must exist. A page or plot (``X.md``, ``X.png``) stands for its record, the ``X.json`` beside it; a
``.json`` is its own record. Each record must name, in ``written_by``, the script that wrote it (a file in
the repository) and the command that ran it (``bench/records.py`` checks the same for every record). A
page with no record beside it is an analysis (``cpu-analysis.md``): it must name the records it reads,
and each of those must pass. A link to the folder itself claims no figure and only has to exist.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(((?:\.\./)*bench/results/[^)\s#]*)[^)]*\)")
CODE = re.compile(r"`((?:\.\./)*bench/results/[^`\s]+)`")


def _records_module():
    spec = importlib.util.spec_from_file_location("bench_records", REPO / "bench" / "records.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def references() -> list[tuple[str, Path]]:
    """(page: line, resolved target) for every reference to bench/results/ in README.md and docs/."""
    found = []
    for page in PAGES:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for raw in [*LINK.findall(line), *CODE.findall(line)]:
                if "*" in raw or "<" in raw:
                    continue  # a pattern (`triton-serve-*.md`), not a file
                base = page.parent if raw.startswith("../") else REPO
                found.append((f"{page.relative_to(REPO)}:{n}", (base / raw).resolve()))
    return found


def _record_of(target: Path) -> list[Path]:
    """The records a reference stands for (see the module docstring)."""
    if target.suffix == ".json":
        return [target]
    beside = target.with_suffix(".json")
    if beside.is_file():
        return [beside]
    named = {m for m in re.findall(r"[\w.-]+\.json", target.read_text()) if (RESULTS / m).is_file()}
    return [RESULTS / m for m in sorted(named)]


def test_readme_has_references_to_records() -> None:
    refs = references()
    assert len(refs) >= 10, refs
    assert any(t.name.startswith("int8-cxr-seeds-") for _, t in refs)


@pytest.mark.parametrize(("where", "target"), references(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_each_reference_is_a_record_that_names_its_script_and_command(where: str, target: Path) -> None:
    assert target.exists(), f"{where}: {target.relative_to(REPO)} does not exist"
    if target.is_dir():
        return
    records = _record_of(target)
    assert records, f"{where}: {target.name} has no record beside it and names none"
    problems = _records_module().problems
    for rec in records:
        why = problems(rec)
        assert why is None, f"{where}: {rec.relative_to(REPO)}: {why} (run python bench/records.py check)"


MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`[^`]*`")
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))


def relative_links(page: Path) -> list[tuple[int, str, Path]]:
    """(line, link, resolved path) for every relative markdown link on a page, outside code."""
    found = []
    fenced = False
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        for link in MD_LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I) or link.startswith("#"):
                continue  # http(s), mailto, ...; an anchor on the same page
            path = link.split("#", 1)[0]
            found.append((n, link, (page.parent / path).resolve()))
    return found


def test_pages_links_resolve_and_the_readme_leads_to_every_docs_page() -> None:
    """README.md stays short and leads to every page in docs/; no page links to a path that is not there."""
    broken = [
        f"{page.relative_to(REPO)}:{n}: {link}"
        for page in [README, *DOCS]
        for n, link, target in relative_links(page)
        if not target.exists()
    ]
    assert not broken, "relative links to nothing:\n" + "\n".join(broken)
    lines = len(README.read_text().splitlines())
    assert lines <= 300, f"README.md has {lines} lines; move detail into docs/ (at most 300)"
    assert DOCS, "docs/ has no pages"
    linked = {target for _, _, target in relative_links(README)}
    unlinked = [page.relative_to(REPO).as_posix() for page in DOCS if page.resolve() not in linked]
    assert not unlinked, f"README.md links to no {unlinked}"
