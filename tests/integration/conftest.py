"""Shared fixtures for integration tests against a real nginx on 127.0.0.1.

The machinery lives in tests/integration/nginx_fixture.py (importable as ``nginx_fixture``
from tests in this directory); these fixtures wire it up:

- ``backend_factory(pool, **faults)`` -> a started ``Backend`` (stopped at teardown).
- ``pools_factory(blue=2, green=2)`` -> {"blue": [Backend, ...], "green": [...]}.
- ``nginx_lab`` -> a started ``NginxLab`` for app ``demo`` with 2 blue + 2 green backends and the
  generated file seeded at blue 100 / green 0. Extra attributes: ``lab.backends`` (the dict above)
  and ``lab.pools`` (colour -> list of "127.0.0.1:port", ready for the module's ``pools`` option).
  Point the module at it with ``lab.module_args(shares=..., pools=lab.pools)``.
- ``nginx_lab_factory(app="demo", blue=2, green=2, shares=None)`` for other shapes.

Every test that uses them is skipped when nginx is not installed. nginx is stopped and the
backends are killed at teardown, even when the test fails.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nginx_fixture  # noqa: E402  (after the sys.path tweak)


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def backend_factory():
    started = []

    def make(pool, **faults):
        b = nginx_fixture.Backend(pool, **faults).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def pools_factory(backend_factory):
    def make(blue=2, green=2):
        return {"blue": [backend_factory("blue") for _ in range(blue)],
                "green": [backend_factory("green") for _ in range(green)]}
    return make


@pytest.fixture
def nginx_lab_factory(tmp_path, pools_factory):
    if not nginx_fixture.nginx_binary():
        pytest.skip("nginx is not installed")
    labs = []

    def make(app="demo", blue=2, green=2, shares=None, workers=2, lua=False):
        if lua and not nginx_fixture.lua_available():
            pytest.skip("the lua module for nginx (libnginx-mod-http-lua, lua-resty-core) is not installed")
        backends = pools_factory(blue=blue, green=green)
        lab = nginx_fixture.NginxLab(str(tmp_path / ("nginx-%s-%d" % (app, len(labs)))), app=app,
                                     workers=workers, lua=lua)
        lab.backends = backends
        lab.pools = dict((c, [b.address for b in bs]) for c, bs in backends.items())
        labs.append(lab)
        lab.start(pools=lab.pools, shares=shares or {"blue": 100, "green": 0})
        return lab

    yield make
    for lab in labs:
        lab.stop()


@pytest.fixture
def nginx_lab(nginx_lab_factory):
    return nginx_lab_factory()


@pytest.fixture
def lua_lab(nginx_lab_factory):
    """The reload-free setup of the nginx_lb role (skipped when the lua module is not installed)."""
    return nginx_lab_factory(lua=True)
