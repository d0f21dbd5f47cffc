"""The documentation: every setting and every public name is in it, and it builds.

The first two tests read the reST sources and are quick; the third builds
the HTML with Sphinx, with warnings as errors, as ``.ci/run`` does, and then
checks the built inventory for the same names.
"""

from __future__ import annotations

import importlib
import posixpath
import re
from pathlib import Path
from typing import Any

import pytest

import flask_jobrunner
from flask_jobrunner.config import DEFAULTS

DOCS = Path(__file__).resolve().parents[1] / "docs"

#: ``.. data:: JOBRUNNER_<KEY>`` (or ``py:data``) at the start of a line.
CONFIG_ENTRY = re.compile(r"^\.\. (?:py:)?data:: JOBRUNNER_(\w+)\s*$", re.MULTILINE)
#: Any autodoc or Python-domain directive that documents an object, and its target.
OBJECT_DIRECTIVE = re.compile(
    r"^\.\. (?:auto(?P<auto>module|class|exception|function|data|attribute|method)"
    r"|(?:py:)?(?P<py>module|class|exception|function|data|attribute|method|currentmodule))"
    r"::\s+(?P<target>[\w.]+)\s*$",
    re.MULTILINE,
)
#: What the API reference must cover besides ``flask_jobrunner.__all__``.
REQUIRED_OBJECTS = [
    "flask_jobrunner.backends.base.Backend",
    "flask_jobrunner.backends.memory.MemoryBackend",
    "flask_jobrunner.backends.sql.SQLBackend",
    "flask_jobrunner.backends.redis.RedisBackend",
    "flask_jobrunner.signals",
    "flask_jobrunner.errors",
]


def resolve(dotted: str) -> Any:
    """The object a dotted name names: a module, or an attribute of one."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            value = getattr(value, part)
        return value
    raise ImportError(f"nothing is importable in {dotted!r}")


def documented_objects(source: str) -> dict[str, Any]:
    """Each object that *source* documents, by its full name as Sphinx resolves it.

    Like Sphinx, a relative target is looked up in the current module, which
    ``currentmodule`` and ``automodule`` (or ``py:module``) set.
    """
    module: str | None = None
    found: dict[str, Any] = {}
    for match in OBJECT_DIRECTIVE.finditer(source):
        kind = match["auto"] or match["py"]
        target = match["target"]
        if kind == "currentmodule":
            module = None if target == "None" else target
            continue
        if kind == "module":
            module = target
            found[target] = resolve(target)
            continue
        if module is not None and not target.startswith("flask_jobrunner"):
            target = f"{module}.{target}"
        found[target] = resolve(target)
    return found


def test_every_setting_has_one_entry_in_configuration_rst() -> None:
    keys = CONFIG_ENTRY.findall((DOCS / "configuration.rst").read_text(encoding="utf-8"))

    assert sorted(set(DEFAULTS) - set(keys)) == [], "settings without a '.. data::' entry"
    assert sorted(set(keys) - set(DEFAULTS)) == [], "entries naming no setting"
    assert len(keys) == len(set(keys)), "a setting with two entries"


def test_every_public_name_is_documented_in_api_rst() -> None:
    documented = documented_objects((DOCS / "api.rst").read_text(encoding="utf-8"))
    objects = list(documented.values())

    missing = [
        name
        for name in flask_jobrunner.__all__
        if not any(value is getattr(flask_jobrunner, name) for value in objects)
    ]
    assert missing == [], "public names api.rst documents nowhere"
    undocumented = [name for name in REQUIRED_OBJECTS if resolve(name) not in objects]
    assert undocumented == []


@pytest.mark.slow
def test_docs_build_without_warnings_and_cover_every_name(tmp_path: Path) -> None:
    from sphinx.cmd.build import build_main
    from sphinx.util.inventory import InventoryFile

    status = build_main(["-W", "-b", "html", "-q", str(DOCS), str(tmp_path)])

    assert status == 0, "sphinx-build -W failed; run it by hand to see the warnings"
    with (tmp_path / "objects.inv").open("rb") as inventory_file:
        inventory = InventoryFile.load(inventory_file, "", posixpath.join)
    names = {name for entries in inventory.values() for name in entries}
    settings = [key for key in DEFAULTS if f"JOBRUNNER_{key}" not in names]
    assert settings == [], "settings missing from the built docs"
    public = [
        name
        for name in flask_jobrunner.__all__
        if f"flask_jobrunner.{name}" not in names and f"flask_jobrunner.signals.{name}" not in names
    ]
    assert public == [], "public names missing from the built docs"
