"""The README, BENCHMARKS.md and docs/ point only at files that exist: links, pictures and results files
(BENCHMARKS.md names each results file in backticks, with or without ``benchmarks/results/``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "RELIABILITY.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
RESULTS = re.compile(r"`(?:benchmarks/results/)?([\w.\-]+\.json)`")


def missing_links(page: Path) -> list[str]:
    """Relative link targets of a Markdown page (``[text](path)`` and ``![alt](path)``) that do not exist."""
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    return [t for t in targets if not (page.parent / t).exists()]


def test_every_relative_link_and_picture_exists():
    broken = {str(p.relative_to(ROOT)): missing_links(p) for p in PAGES}
    assert {page: links for page, links in broken.items() if links} == {}


def test_every_results_file_benchmarks_names_exists():
    named = set(RESULTS.findall((ROOT / "BENCHMARKS.md").read_text()))
    assert named, "BENCHMARKS.md names its results files"
    assert sorted(n for n in named if not (ROOT / "benchmarks" / "results" / n).is_file()) == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text("[ok](there.md) [web](https://example.org/x) [gone](nowhere.md#part) ![pic](img/none.png)")
    assert missing_links(page) == ["nowhere.md", "img/none.png"]
