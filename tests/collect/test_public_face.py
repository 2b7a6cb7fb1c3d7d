"""The package's public face: what other stages use is named in ``__all__`` and importing it starts no simulator."""

from __future__ import annotations

import subprocess
import sys

import pytest

import collect
import collect.backends
import collect.policies

HEAVY = ("libsumo", "carla", "torch")


def test_importing_collect_loads_neither_a_simulator_nor_torch() -> None:
    code = "import sys, collect, collect.backends, collect.policies; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("package", [collect, collect.backends, collect.policies], ids=lambda p: p.__name__)
def test_every_public_name_resolves(package: object) -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        getattr(package, "nothing")


def test_a_backend_loads_its_simulator_on_first_use() -> None:
    from collect.backends.sumo import SumoBackend

    assert collect.backends.SumoBackend is SumoBackend
