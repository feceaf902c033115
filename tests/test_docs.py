"""The README is the front door and the docs hold together: every relative link resolves, the test command is CI's."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROJECT_DOCS = sorted((REPO / "projects").glob("*/README.md"))  # each research project's own page
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
TEST_COMMAND = 'pip install -e ".[dev,trackers]" -e projects/visibility && python -m pytest'
RUFF = " && ruff check lfem_plugin tests benchmarks projects && "


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def relative_links(text: str) -> list:
    """Link targets outside fenced code blocks that are not URLs."""
    return [t for t in _LINK.findall(_FENCE.sub("", text)) if not re.match(r"[a-z]+:", t)]


def anchors(path: Path) -> set:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_github_anchor_and_link_extraction_on_hand_built_text():
    assert github_anchor("Before a long run: `lfem-reid doctor`") == "before-a-long-run-lfem-reid-doctor"
    assert github_anchor("ORL faces (`orl_faces`)") == "orl-faces-orl_faces"
    text = "[a](docs/A.md#x) ![p](p.png) [u](https://x.org)\n```\n[c](in/code.md)\n```\n[b](#top)"
    assert relative_links(text) == ["docs/A.md#x", "p.png", "#top"]


@pytest.mark.parametrize("doc", DOCS + PROJECT_DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(doc):
    broken = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{doc.name}: links that do not resolve: {broken}"


def test_the_docs_index_lists_every_docs_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert DOCS[1:] and all(f"(docs/{p.name})" in readme for p in DOCS[1:])


def test_readme_is_a_front_door_whose_test_command_ci_runs_after_ruff():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert TEST_COMMAND in readme
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    runs = [line for line in ci if "python -m pytest" in line]
    assert len(runs) == 1 and RUFF in runs[0]
    assert runs[0].replace(RUFF, " && ") == TEST_COMMAND
