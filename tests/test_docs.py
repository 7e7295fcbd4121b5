"""The documentation lives in the repository: no file points to design notes kept outside it, every relative
link in README.md and docs/*.md reaches a file that exists, and every pointer to a page under docs/ (as code
comments write them: the page's path, optionally followed by a quoted section) names a page and a heading that
exist."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Written in pieces so that this file does not match itself.
OUTSIDE_NOTES = ("DESIGN" + ".md", "VAMP-" + "REFERENCE", "HOT" + "-PATH-NOTES", "../" + "shared",
                 "/work/" + "shared")

# What a checkout may hold that is not the project's own text (see .gitignore).
SKIPPED_DIRS = {".git", ".venv", ".vamp", "__pycache__", ".pytest_cache", ".hypothesis", "build", "node_modules"}

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_POINTER = re.compile(r"docs/([A-Za-z0-9_-]+\.md)(?:,\s*\"([^\"]+)\")?")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def project_files() -> list[Path]:
    """Every text file of the project, outside version control's and tools' own directories."""
    files = []
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts):
            continue
        if relative.parts[:2] == ("benchmarks", "out") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:            # binary (e.g. the MaxMind test database)
            continue
        files.append(path)
    return files


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return [re.sub(r"[`*]", "", heading) for heading in _HEADING.findall(text)]


def test_the_docs_exist():
    assert DOCS.is_dir(), "docs/ is missing"
    assert (DOCS / "README.md").is_file(), "docs/README.md (the index) is missing"


def test_no_file_points_outside_the_repository():
    offenders = []
    for path in project_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for needle in OUTSIDE_NOTES:
                if needle in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {needle}")
    assert not offenders, "references to notes that are not in the repository:\n" + "\n".join(offenders)


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_reach_files_that_exist(page: Path):
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):        # http:, https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in {slug(h) for h in headings(linked)}:
            broken.append(f"{target}: no heading with anchor #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"broken links in {page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_pointers_to_docs_name_pages_and_sections_that_exist():
    """Comments write `(docs/gateway-config.md, "Routing")`: the page must exist and have that heading."""
    broken = []
    for path in project_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in _POINTER.finditer(text):
            page, section = DOCS / match.group(1), match.group(2)
            where = f"{path.relative_to(ROOT)}: {match.group(0)}"
            if not page.is_file():
                broken.append(f"{where}: no such page")
            elif section is not None and section not in headings(page):
                broken.append(f"{where}: no heading {section!r} in docs/{match.group(1)}")
    assert not broken, "pointers to docs that lead nowhere:\n" + "\n".join(broken)


def test_every_docs_page_is_in_the_index():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for target in _LINK.findall(index)}
    missing = [page.name for page in sorted(DOCS.glob("*.md")) if page.name != "README.md" and page.name not in linked]
    assert not missing, f"docs pages not linked from docs/README.md: {missing}"


def test_the_example_error_of_gateway_config_is_what_validation_says():
    """docs/gateway-config.md shows its example with one bad condition, and the error that gives (with the line)."""
    from gateway.config.load import ConfigError, load_text

    text = (DOCS / "gateway-config.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", text, re.DOTALL).group(1)
    bad = re.search(r"With `condition: (.*?)` in the example above", text, re.DOTALL).group(1)
    shown = re.search(r"in the example above: `(gateway .*?\(line \d+\))`", text, re.DOTALL).group(1)
    (line,) = [line for line in example.splitlines() if line.strip().startswith("condition:")]
    example = example.replace(line, re.sub(r"condition: .*", f"condition: {' '.join(bad.split())}", line))
    with pytest.raises(ConfigError) as error:
        load_text(example, "gateways.yaml")
    assert str(error.value) == " ".join(shown.split())
