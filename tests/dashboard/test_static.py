"""The page ships whole with the package: nothing is fetched from elsewhere (offline use)."""

from __future__ import annotations

import re

from serendib.dashboard.app import STATIC_DIR

# The SVG namespace is a name, not an address anything is fetched from.
NAMESPACES = {"http://www.w3.org/2000/svg"}


def test_the_page_loads_only_bundled_files() -> None:
    page = (STATIC_DIR / "index.html").read_text()

    assets = re.findall(r'(?:src|href)="([^"]+)"', page)

    assert sorted(assets) == ["/static/app.js", "/static/style.css", "data:,"]
    bundled = [a.removeprefix("/static/") for a in assets if a.startswith("/static/")]
    assert all((STATIC_DIR / name).is_file() for name in bundled)


def test_no_static_file_refers_to_another_site() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        addresses = set(re.findall(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'`)]*""", text))
        assert addresses <= NAMESPACES, f"{path.name} refers to {addresses - NAMESPACES}"
