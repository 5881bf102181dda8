"""The README stays an index: small, and no paragraph written twice (a broken edit once
repeated one paragraph until the file was 4 MB)."""

import collections

import pytest

from tests.conftest import REPO_ROOT

PAGES = ["README.md", *sorted(p.relative_to(REPO_ROOT).as_posix()
                              for p in (REPO_ROOT / "docs").glob("*/README.md"))]  # fmt: skip


def test_the_readme_is_an_index():
    assert (REPO_ROOT / "README.md").stat().st_size < 30_000


@pytest.mark.parametrize("page", PAGES)
def test_no_paragraph_is_written_twice(page):
    text = (REPO_ROOT / page).read_text()
    paragraphs = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 80]
    repeated = [p[:60] for p, n in collections.Counter(paragraphs).items() if n > 1]
    assert not repeated, f"{page} repeats: {repeated}"
