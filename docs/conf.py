"""Sphinx configuration for the flask-jobrunner documentation.

Build with ``sphinx-build -W -b html docs docs/_build``. No extension here
reaches the network: intersphinx is deliberately left out.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# The package itself, for a checkout that was not installed with 'pip install -e'.
sys.path.insert(1, str(HERE.parent))

# -- project -----------------------------------------------------------------

project = "flask-jobrunner"
author = "The flask-jobrunner developers"
copyright = "the flask-jobrunner developers"
try:
    release = package_version("flask-jobrunner")
except PackageNotFoundError:  # building from a tree that was never installed
    release = "0.0.0"
version = ".".join(release.split(".")[:2])

# -- general -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "changes_md",
]
exclude_patterns = ["_build"]
default_role = "code"
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- autodoc -----------------------------------------------------------------

autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True

# The backends import their drivers at module level. All of them are
# installed with the 'dev' extra; a driver that is missing is mocked, so
# the reference still builds on a machine with only some extras.
autodoc_mock_imports = [
    module
    for module in ("sqlalchemy", "redis", "psycopg", "pymysql")
    if importlib.util.find_spec(module) is None
]

# -- HTML --------------------------------------------------------------------

html_theme = "furo"
html_title = f"flask-jobrunner {release}"
html_show_sourcelink = False
