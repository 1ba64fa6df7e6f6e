"""The documentation is self-contained: no citation of documents the repository does not hold, no
machine-specific paths, and every relative link of README.md and docs/*.md (anchors included) resolves."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Citations of notes that are not part of the repository, and paths of one machine (written in
# pieces, so that a search of the repository for them does not find this list).
FORBIDDEN = tuple(
    "".join(parts)
    for parts in (("recipe", " §"), ("ecosystem", ".md"), ("ecosystem", " §"), ("paper", ".md"), ("/wo", "rk/"),
                  ("shared", "/reference"))
)  # fmt: skip

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOCS_ANCHOR = re.compile(r"\bdocs/([\w.-]+\.md)#([\w-]+)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")


def repository_files() -> list[Path]:
    """The files git tracks (build outputs and other untracked files are not the repository's)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = sorted({name for name in listed.split("\0") if name})
    return [ROOT / name for name in paths if name != THIS_FILE]


def read_text(path: Path) -> str | None:
    """The file's text, or None for links, folders, missing and binary files."""
    if path.is_symlink() or not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def prose_lines(text: str) -> list[str]:
    """Markdown lines outside fenced code blocks, with inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(INLINE_CODE.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        base = slug(match.group(1))
        number = counts.get(base, 0)
        counts[base] = number + 1
        found.add(base if number == 0 else f"{base}-{number}")
    return found


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_folder_exists():
    for page in ("recipe.md", "protocols.md", "operations.md", "getting-started.md", "api.md"):
        assert (ROOT / "docs" / page).is_file(), f"docs/{page} is missing"


def test_no_citation_of_documents_outside_the_repository():
    offending = []
    for path in repository_files():
        text = read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for needle in FORBIDDEN:
                if needle in line:
                    offending.append(f"{path.relative_to(ROOT)}:{number}: {needle!r}")
    assert not offending, "citations of documents the repository does not hold:\n" + "\n".join(offending)


def test_relative_markdown_links_resolve():
    broken = []
    for page in markdown_pages():
        for line in prose_lines(page.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                destination = (page.parent / file_part).resolve() if file_part else page
                name = f"{page.relative_to(ROOT)}: ({target})"
                if not destination.exists():
                    broken.append(f"{name}: {file_part} does not exist")
                elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                    broken.append(f"{name}: no heading #{anchor} in {destination.relative_to(ROOT)}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_cited_docs_sections_exist():
    """``docs/<page>.md#<section>`` cited in code, configs and docs names a real heading."""
    missing = []
    for path in repository_files():
        text = read_text(path)
        if text is None:
            continue
        for page, anchor in DOCS_ANCHOR.findall(text):
            target = ROOT / "docs" / page
            if not target.is_file():
                missing.append(f"{path.relative_to(ROOT)}: docs/{page} does not exist")
            elif anchor not in anchors(target):
                missing.append(f"{path.relative_to(ROOT)}: no heading #{anchor} in docs/{page}")
    assert not missing, "\n".join(missing)
