"""Where the report's plotly.js comes from.

Wheels and ``pip install -e .`` carry plotly's official partial bundle (scatter, bar and pie
traces: everything the report draws, about 1.2 MB), fetched and checked when the package is
built (``setup.py``). A package built without network has no such file: the report then
inlines the full plotly.js of the ``plotly`` Python package (4.8 MB), which draws the same page.
Nothing is downloaded when a report is written.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

ASSET = "plotly-basic.min.js"  # in poptrain/report/assets/, written by setup.py's build step
VERSION = "4.1.1"  # plotly.js-basic-dist-min, pinned in setup.py


def partial_bundle() -> str | None:
    """The partial plotly.js bundle shipped with the package, or None when it was built without it."""
    try:
        return resources.files("poptrain.report").joinpath("assets", ASSET).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None


@cache
def plotly_js() -> tuple[str, str]:
    """``(source, name)`` of the plotly.js to inline: the partial bundle when the package has it,
    else the plotly package's full one."""
    partial = partial_bundle()
    if partial is not None:
        return partial, f"plotly.js-basic {VERSION}"
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    return get_plotlyjs(), f"plotly.js {get_plotlyjs_version()}"
