"""The committed build is the build of the committed sources, it is what the shell links, and it
stays within the budget (80 KB of JS + CSS, gzipped)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
WEB = DASHBOARD / "web"
STATIC = DASHBOARD / "static"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_committed_build_matches_the_sources() -> None:
    info = json.loads((STATIC / "build.json").read_text())
    sources = sorted(str(p.relative_to(WEB)) for p in (WEB / "src").rglob("*") if p.is_file())
    assert sorted(info["sources"]) == sorted([*sources, "build.mjs", "package-lock.json"]), (
        "dashboard/web/src changed since the last build: run scripts/build-dashboard"
    )
    for name, digest in info["sources"].items():
        assert sha(WEB / name) == digest, f"dashboard/web/{name} changed since the last build: run scripts/build-dashboard"
    for name, digest in info["outputs"].items():
        assert sha(STATIC / name) == digest, f"dashboard/static/{name} was edited by hand: run scripts/build-dashboard"


def test_shell_links_the_built_assets_and_nothing_inline() -> None:
    manifest = json.loads((STATIC / "manifest.json").read_text())
    shell = (STATIC / "index.html").read_text()
    assert f'src="/assets/{manifest["js"]}"' in shell and f'href="/assets/{manifest["css"]}"' in shell
    assert '<meta name="littlestats" content="">' in shell  # the server fills it in
    assert "<style" not in shell and "<script>" not in shell and " style=" not in shell
    built = {p.name for p in (STATIC / "assets").iterdir()}
    assert built == {manifest["js"], manifest["css"], manifest["js"] + ".gz", manifest["css"] + ".gz"}
    for name in (manifest["js"], manifest["css"]):
        assert gzip.decompress((STATIC / "assets" / (name + ".gz")).read_bytes()) == (STATIC / "assets" / name).read_bytes()


def test_javascript_and_css_are_at_most_80_kb_gzipped() -> None:
    manifest = json.loads((STATIC / "manifest.json").read_text())
    total = sum(len(gzip.compress((STATIC / "assets" / manifest[k]).read_bytes(), compresslevel=9))
                for k in ("js", "css"))
    assert total <= 80 * 1024, f"JS + CSS are {total} bytes gzipped"


@pytest.mark.slow
def test_a_fresh_build_gives_the_committed_bytes(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (WEB / "node_modules" / ".bin" / "esbuild").exists():
        pytest.skip("needs node and dashboard/web/node_modules (scripts/build-dashboard installs them)")
    subprocess.run(["node", "build.mjs", str(tmp_path)], cwd=WEB, check=True, capture_output=True, timeout=120)
    for name in ["index.html", "manifest.json", *(f"assets/{p.name}" for p in (STATIC / "assets").iterdir())]:
        assert (tmp_path / name).read_bytes() == (STATIC / name).read_bytes(), name
