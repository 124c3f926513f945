"""Build step: put plotly's partial bundle (plotly.js-basic-dist-min, MIT) into the package.

The report inlines plotly.js. The full bundle is 4.8 MB; the basic one (scatter, bar, pie: all
the report draws) about 1.2 MB. It is downloaded from the npm registry when the package is built
(wheel, sdist or ``pip install -e .``), checked against its pinned npm integrity hash, and written
to src/poptrain/report/assets/ (git-ignored, listed in package-data). Without network the build
goes on without it and reports fall back to the plotly package's full bundle.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

URL = "https://registry.npmjs.org/plotly.js-basic-dist-min/-/plotly.js-basic-dist-min-4.1.1.tgz"
INTEGRITY = "sha512-1oNF8PeQx2hv/y7tqEVWKD3JGwn/MGEMQ8mL9HUwsaqG9FGy/OU5FHUHvzqbqxN4mnwZGI9abTiE775C4kkjMQ=="
MEMBERS = {"package/plotly-basic.min.js": "plotly-basic.min.js", "package/LICENSE": "plotly-LICENSE.txt"}
SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"  # of plotly-basic.min.js
ASSETS = Path(__file__).resolve().parent / "src" / "poptrain" / "report" / "assets"


def fetch_plotly_bundle() -> None:
    """Write the partial bundle and its license into ASSETS unless they are there already."""
    target = ASSETS / "plotly-basic.min.js"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256:
        return
    try:
        with urllib.request.urlopen(URL, timeout=60) as response:  # a fixed https URL
            archive = response.read()
    except OSError as exc:
        print(f"poptrain build: could not fetch {URL} ({exc}); reports will inline the full plotly.js", file=sys.stderr)
        return
    algorithm, _, expected = INTEGRITY.partition("-")
    if base64.b64encode(hashlib.new(algorithm, archive).digest()).decode() != expected:
        raise RuntimeError(f"{URL} does not match its pinned integrity {INTEGRITY}")
    ASSETS.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member, name in MEMBERS.items():
            source = tar.extractfile(member)
            if source is None:
                raise RuntimeError(f"{URL} has no file {member}")
            partial = ASSETS / f".{name}.tmp"
            partial.write_bytes(source.read())
            partial.replace(ASSETS / name)


class BuildPy(build_py):
    """build_py that first fetches the bundle into the source tree (so editable installs see it too)."""

    def run(self) -> None:
        fetch_plotly_bundle()
        super().run()


class Sdist(sdist):
    """sdist that carries the bundle, so a wheel built from it needs no network."""

    def run(self) -> None:
        fetch_plotly_bundle()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
