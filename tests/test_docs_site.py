"""The documentation site (mkdocs.yml, docs/) builds strictly: a broken link or anchor, a page missing
from the nav, or a docstring the API reference cannot render fails the build. The built site holds the
key pages, every results report is in the nav, the authors' notes (docs/notes/) stay out of it, and no
user-facing page names a temporary path or the machine the docs were written on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTES = DOCS / "notes"
FORBIDDEN = ("/tmp/", "this machine")  # commands in reports use relative paths or $STORE; no build-time wording


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, noise here
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_the_site_builds_strictly_with_its_key_pages(site):
    for page in (
        "index.html",
        "cli/index.html",
        "troubleshooting/index.html",
        "DESIGN/index.html",
        "api/index.html",
        "api/ot/index.html",
        "results/index.html",
        "results-openmoji/index.html",
        "results/iconify-core/report/index.html",
    ):
        assert (site / page).is_file(), f"the built site has no {page}"
    api = (site / "api/ot/index.html").read_text()
    assert "sotalign.ot" in api and "klot" in api, "the API reference did not render sotalign.ot"
    assert not (site / "notes").exists(), "docs/notes/ (the authors' notes) must stay out of the site"


def nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_every_results_folder_is_in_the_nav():
    pages = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    folders = sorted(p.name for p in (DOCS / "results").iterdir() if p.is_dir())
    assert folders, "no docs/results/<name>/ folder"
    missing = [name for name in folders if not any(page.startswith(f"results/{name}/") for page in pages)]
    assert not missing, f"results folders with no page in mkdocs.yml's nav: {missing}"


def test_no_page_names_a_temporary_path_or_this_machine(site):
    sources = [p for p in DOCS.rglob("*.md") if NOTES not in p.parents]
    built = list(site.rglob("*.html"))
    assert sources and built
    hits = [
        f"{path}: {word!r}"
        for path in sources + built
        for word in FORBIDDEN
        if word in path.read_text(errors="replace").lower()
    ]
    assert not hits, "pages with words that do not belong in the docs:\n" + "\n".join(hits)
