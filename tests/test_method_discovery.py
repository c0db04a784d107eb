"""The method registry finds method modules by itself: adding a method is adding one file."""
from __future__ import annotations

import sys

from engine.methods import base, discover_methods, get_method, list_methods

ELEVENTH = '''
from engine.methods.base import Method, Stage, register_method
from extra_methods.shared import LOSSES


@register_method
class Eleventh(Method):
    name = "eleventh"
    paper = "none"
    stages = (Stage("train", LOSSES, "a stand-in"),)
'''


def test_a_new_method_file_is_registered_and_the_modules_beside_it_are_not_methods(tmp_path, monkeypatch):
    package = tmp_path / "extra_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "eleventh.py").write_text(ELEVENTH)
    (package / "shared.py").write_text('LOSSES = ("total",)\n')
    (package / "_draft.py").write_text('raise AssertionError("a module named _… is not imported")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # the stand-in leaves the real registry alone
    try:
        assert discover_methods("extra_methods") == ["eleventh"]
        assert get_method("eleventh").__module__ == "extra_methods.eleventh"
        assert "extra_methods.shared" in sys.modules
        assert discover_methods("extra_methods") == []  # imported once, registered once
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "extra_methods"]:
            del sys.modules[name]


def test_every_method_of_the_engine_is_registered_from_its_own_module_in_engine_methods():
    modules = {get_method(name).__module__ for name in list_methods()}
    assert len(modules) == len(list_methods()) >= 10
    assert all(module.startswith("engine.methods.") for module in modules)
