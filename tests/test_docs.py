"""The repository's documentation stands alone: no tracked file points at documents outside the
repository (a clone has only docs/), every relative link of the Markdown pages reaches a file,
every docs/ page is linked from README.md, and every "docs/<page>.md" a file names exists (with
the numbered section of math.md it cites)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Built from pieces so that this file does not match itself.
_OUTSIDE = re.compile("|".join([
    re.escape("../" + "shared"),                 # the folder beside the repository
    r"\b(?:SPEC|DESIGN)" + re.escape(".md"),     # the contract documents that live there
    r"\bSPEC(?:'s| sections?\b)",                # its name with 's or " section N" (not the kernels' SPEC objects)
]))
_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", "node_modules"}
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_CITED_PAGE = re.compile(r"\bdocs/([A-Za-z0-9_-]+\.md)\b")
_CITED_SECTION = re.compile(r"docs/math\.md,? sections? (\d+)(?:\s*(?:-|to|and)\s*(\d+))?")


def _tracked() -> list[Path]:
    """The repository's files: git's list when this is a checkout, else every file below ROOT."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        names = [n for n in out.stdout.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = []
    if names:
        return [ROOT / n for n in names if (ROOT / n).is_file()]
    return [p for p in ROOT.rglob("*") if p.is_file() and not _SKIP_DIRS & set(p.relative_to(ROOT).parts)]


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _markdown() -> list[Path]:
    return sorted(p for p in _tracked() + list(DOCS.glob("*.md")) if p.suffix == ".md")


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", _text(page), flags=re.S)        # code blocks hold no links
    return _LINK.findall(text) + _REF_LINK.findall(text)


def test_no_file_points_outside_the_repository():
    found = []
    for path in _tracked():
        for n, line in enumerate(_text(path).splitlines(), 1):
            if _OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, "cite docs/*.md instead:\n" + "\n".join(found)


def test_the_docs_pages_exist_and_readme_links_each():
    pages = {p.name for p in DOCS.glob("*.md")}
    assert {"math.md", "api.md", "tolerances.md", "design.md"} <= pages
    linked = {Path(link.split("#")[0]).name for link in _links(ROOT / "README.md") if link.startswith("docs/")}
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"


@pytest.mark.parametrize("page", _markdown(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_in_the_repository(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):   # a URL or an anchor
            continue
        target = (page.parent / link.split("#")[0]).resolve()
        if not target.exists() or ROOT not in (target, *target.parents):
            broken.append(link)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing in the repository: {broken}"


def test_every_cited_docs_page_and_math_section_exists():
    sections = set(re.findall(r"^## (\d+)\.", _text(DOCS / "math.md"), re.M))
    missing = []
    for path in _tracked():
        text = _text(path)
        missing += [f"{path.relative_to(ROOT)}: docs/{name}" for name in set(_CITED_PAGE.findall(text))
                    if not (DOCS / name).is_file()]
        for first, last in _CITED_SECTION.findall(text):
            wanted = range(int(first), int(last or first) + 1)
            missing += [f"{path.relative_to(ROOT)}: docs/math.md section {n}" for n in wanted if str(n) not in sections]
    assert not missing, "\n".join(sorted(set(missing)))


def test_the_check_catches_what_it_should():
    """The patterns have teeth (and spare the kernels' SPEC objects)."""
    for line in ("see ../" + "shared/SPEC" + ".md", "(DESIGN" + ".md)", "SPEC" + " section 6", "SPEC" + "'s row"):
        assert _OUTSIDE.search(line), line
    for line in ("SPEC = spec.KernelSpec(...)", "delta_scan's `SPEC` plans", "masks of SPEC'd loads", "docs/math.md"):
        assert not _OUTSIDE.search(line), line
    assert _CITED_SECTION.findall("docs/math.md sections 1-3, docs/math.md section 2") == [("1", "3"), ("2", "")]
