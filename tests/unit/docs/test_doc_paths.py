"""No page cites a file that is not in the repository: relative links and backticked repository
paths in README.md and docs/*.md must exist."""
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
TOP_DIRS = ("roles", "plugins", "tests", "playbooks", "docs", "inventories", "extensions", "changelogs", "meta",
            "bench")
TOP_FILES = ("README.md", "LICENSE", "Makefile", "galaxy.yml", "execution-environment.yml", "requirements.txt",
             "requirements-dev.txt", "bindep.txt", "ansible.cfg", "pytest.ini")
BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand(path):
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py``."""
    parts = BRACES.split(path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def cited_repo_path(token):
    """The repository path a backticked token names, or None when it is not one."""
    token = token.split("::", 1)[0].rstrip(".,;:")
    if any(c in token for c in "<>*$") or "://" in token:
        return None  # a pattern or a placeholder, not one file
    if token in TOP_FILES or (token.split("/", 1)[0] in TOP_DIRS and "/" in token):
        return token
    return None


def citations(page):
    """(line number, what is cited, resolved paths) of one page."""
    found = []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            target = target.split("#", 1)[0]
            found.append((number, target, [(page.parent / target).resolve()]))
        for token in CODE.findall(line):
            path = cited_repo_path(token)
            if path:
                found.append((number, token, [ROOT / p.rstrip("/") for p in expand(path)]))
    return found


def test_the_scan_sees_links_and_paths(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("See [a](a.md#top), [web](https://x.org), `roles/scale/{tasks,meta}/`, `make test`,\n"
                    "`roles/<role>/meta`, `tests/unit/y.py::test_z`, `galaxy.yml`.\n")
    cited = [(cited_item[1], [p.name for p in cited_item[2]]) for cited_item in citations(page)]
    assert cited == [("a.md", ["a.md"]), ("roles/scale/{tasks,meta}/", ["tasks", "meta"]),
                     ("tests/unit/y.py::test_z", ["y.py"]), ("galaxy.yml", ["galaxy.yml"])]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_cited_path_exists(page):
    missing = ["%s:%d cites %s" % (page.relative_to(ROOT), number, what)
               for number, what, paths in citations(page) for path in paths if not path.exists()]
    assert not missing, "\n".join(missing)
