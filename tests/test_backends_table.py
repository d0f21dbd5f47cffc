"""Choosing a backend by URL scheme, and importing drivers only when chosen."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flask_jobrunner.backends
from flask_jobrunner.backends import BACKENDS, BackendEntry, load_backend
from flask_jobrunner.backends.memory import MemoryBackend
from flask_jobrunner.errors import ConfigurationError

MISSING_DRIVER = "flask_jobrunner_test_no_such_driver"


@pytest.mark.parametrize("url", ["memory://", "MEMORY://", "memory:///ignored?x=1"])
def test_load_backend_picks_the_class_by_url_scheme(url: str) -> None:
    backend = load_backend(url)
    try:
        assert type(backend) is MemoryBackend
    finally:
        backend.close()


def test_load_backend_passes_settings_and_a_backend_ignores_those_it_does_not_use() -> None:
    backend = load_backend("memory://", result_ttl=5, max_jobs=7, lease=30, eager=True)
    assert isinstance(backend, MemoryBackend)
    assert backend.result_ttl == 5
    assert backend.max_jobs == 7


def test_load_backend_uses_the_scheme_before_a_plus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        BACKENDS, "fake", BackendEntry("flask_jobrunner.backends.memory:MemoryBackend")
    )
    assert type(load_backend("fake+somedriver://host/db")) is MemoryBackend


@pytest.mark.parametrize("url", ["nope://somewhere", "redis-cluster://x", "", "/a/path.db"])
def test_an_unknown_scheme_lists_the_known_ones(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_backend(url)

    message = str(caught.value)
    assert "unknown scheme" in message
    assert repr(url) in message
    for scheme in set(BACKENDS) - {"sqlalchemy"}:
        assert f"'{scheme}://'" in message
    assert "'sqlalchemy'," in message


def test_a_new_table_entry_is_listed_as_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        BACKENDS, "fake", BackendEntry("flask_jobrunner.backends.memory:MemoryBackend")
    )
    with pytest.raises(ConfigurationError, match="'fake://'"):
        load_backend("nope://")


def test_a_missing_driver_names_the_pip_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        BACKENDS,
        "fake",
        BackendEntry(
            "flask_jobrunner.backends.memory:MemoryBackend",
            driver=MISSING_DRIVER,
            install="flask-jobrunner[fake]",
        ),
    )

    with pytest.raises(ConfigurationError) as caught:
        load_backend("fake://localhost")

    message = str(caught.value)
    assert "pip install 'flask-jobrunner[fake]'" in message
    assert MISSING_DRIVER in message
    assert "'fake' backend" in message
    assert isinstance(caught.value.__cause__, ImportError)
    assert MISSING_DRIVER not in sys.modules


def test_a_present_driver_is_imported_before_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        BACKENDS,
        "fake",
        BackendEntry(
            "flask_jobrunner.backends.memory:MemoryBackend", driver="json", install="json"
        ),
    )
    assert type(load_backend("fake://")) is MemoryBackend


def test_every_table_entry_names_an_importable_module_and_its_install() -> None:
    for scheme, entry in BACKENDS.items():
        module, _, name = entry.target.partition(":")
        assert module.startswith("flask_jobrunner.backends."), scheme
        assert name, scheme
        if entry.driver is not None:
            assert entry.install, f"{scheme} names a driver but no pip install argument"


def test_importing_flask_jobrunner_imports_no_driver() -> None:
    code = (
        "import sys, flask_jobrunner, flask_jobrunner.backends, flask_jobrunner.extension\n"
        "drivers = ('redis', 'sqlalchemy', 'psycopg', 'pymysql')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in drivers))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_backends_module_exports_its_table() -> None:
    assert set(flask_jobrunner.backends.__all__) >= {
        "BACKENDS",
        "Backend",
        "BackendEntry",
        "load_backend",
    }
