"""EdgeGLM: convert, plan and run GLM-family language models on local hardware.

The core (this package minus ``edgeglm.tui``) never imports Textual, so
converters and the headless CLI stay light and scriptable.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeglm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
