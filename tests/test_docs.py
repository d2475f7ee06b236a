"""The README, BENCHMARKS.md and docs/ point only at files that exist: links, pictures and results files
(BENCHMARKS.md names each results file in backticks, with or without ``benchmarks/results/``); and every results
file behind a figure of the README or of BENCHMARKS' first screen says what it was measured on."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "RELIABILITY.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
RESULTS = re.compile(r"`(?:benchmarks/results/)?([\w.\-]+\.json)`")
RESULTS_DIR = ROOT / "benchmarks" / "results"
# What a results file records of where its figures were measured (benchmarks/provenance.py), anywhere in the file:
# at top level, under ``machine`` or ``meta``, in each ``measurements`` entry or per-run record, or in the
# ``provenance_added_later`` block of a file measured before it was recorded (values there may be "not recorded").
PROVENANCE = ("commit", "cpu", "isa_flags", "cores", "torch")
COMMIT = re.compile(r"\b[0-9a-f]{7,40}\b")
NO_CPU = {"", "x86_64", "not recorded"}


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


def first_screen() -> str:
    """BENCHMARKS.md up to its first section: the headline table, its commands and its notes."""
    return (ROOT / "BENCHMARKS.md").read_text().split("\n## ", 1)[0]


def cited_results() -> list[str]:
    """Results files named by the README and by BENCHMARKS' first screen."""
    return sorted(set(RESULTS.findall((ROOT / "README.md").read_text())) | set(RESULTS.findall(first_screen())))


def recorded(data, found: dict[str, list] | None = None) -> dict[str, list]:
    """Every value a results file records under one of the ``PROVENANCE`` keys, at any depth."""
    found = {key: [] for key in PROVENANCE} if found is None else found
    if isinstance(data, dict):
        for key, value in data.items():
            if key in found and not isinstance(value, (dict, list)):
                found[key].append(value)
            recorded(value, found)
    elif isinstance(data, list):
        for value in data:
            recorded(value, found)
    return found


def provenance_gaps(path: Path) -> list[str]:
    """What a results file does not say of where it was measured: a commit (a git hash), a CPU (more than the
    architecture's name), and the keys for ISA flags, cores and torch (whose value may say "not recorded")."""
    found = recorded(json.loads(path.read_text()))
    gaps = [key for key in PROVENANCE if not found[key]]
    if found["commit"] and not any(COMMIT.search(str(value)) for value in found["commit"]):
        gaps.append("commit (no git hash)")
    if found["cpu"] and all(str(value).strip().lower() in NO_CPU for value in found["cpu"]):
        gaps.append("cpu (no CPU named)")
    return gaps


def test_results_files_behind_the_headline_figures_say_where_they_were_measured():
    cited = cited_results()
    assert "demo_budget20m_avx2_c801a88.json" in cited and "folders.json" in cited, "the first table is read"
    gaps = {name: provenance_gaps(RESULTS_DIR / name) for name in cited if (RESULTS_DIR / name).is_file()}
    assert {name: missing for name, missing in gaps.items() if missing} == {}


def test_the_provenance_check_sees_a_missing_commit_or_cpu(tmp_path):
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"acc": 0.5, "machine": {"cpu": "x86_64", "cores": 2}}))
    assert provenance_gaps(results) == ["commit", "isa_flags", "torch", "cpu (no CPU named)"]
    results.write_text(json.dumps({"acc": 0.5, "machine": {"cpu": "x86_64", "cores": 2, "isa_flags": "avx2",
                                   "torch": "2.14.1"}, "provenance_added_later": {"commit": "not recorded"}}))
    assert provenance_gaps(results) == ["commit (no git hash)", "cpu (no CPU named)"]
    results.write_text(json.dumps({"runs": [{"commit": "c73d8e5", "cpu": "Intel Xeon", "isa_flags": "avx2",
                                             "cores": 2, "torch": "2.14.1"}]}))
    assert provenance_gaps(results) == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text("[ok](there.md) [web](https://example.org/x) [gone](nowhere.md#part) ![pic](img/none.png)")
    assert missing_links(page) == ["nowhere.md", "img/none.png"]
