"""Which file an arbiter module is imported from, beside its compiled twin: the
compiled one while it is current, the source once the source was edited after the
install (or always, under ARBITER_PURE_PYTHON); and a suspended task's stack through
compiled coroutines."""

from __future__ import annotations

import asyncio
import importlib.machinery
import os
from pathlib import Path

import pytest

import arbiter
from arbiter.io.event_loop import awaiting_stack

pytestmark = pytest.mark.timeout(30)

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def twins(tmp_path, source_age: float, built_age: float) -> str:
    """A module ``shop`` as a source and a (dummy) compiled file, aged in seconds."""
    source, built = tmp_path / "shop.py", tmp_path / f"shop{SUFFIX}"
    source.write_text("X = 1\n")
    built.write_bytes(b"")
    now = os.stat(source).st_mtime
    os.utime(source, (now - source_age, now - source_age))
    os.utime(built, (now - built_age, now - built_age))
    return str(tmp_path)


@pytest.fixture
def finder(monkeypatch):
    monkeypatch.setattr(arbiter._SourcesFirst, "pure", False)
    monkeypatch.setattr(arbiter, "_stale", [])
    return arbiter._SourcesFirst


def test_a_current_compiled_module_is_left_to_the_usual_import(tmp_path, finder):
    # installed together (the source written a moment after the build) or built later
    assert finder.find_spec("arbiter.shop", [twins(tmp_path, 100, 101)]) is None
    assert finder.find_spec("arbiter.shop", [twins(tmp_path, 100, 50)]) is None
    assert arbiter._stale == []


def test_a_source_edited_after_the_build_is_imported_instead(tmp_path, finder):
    spec = finder.find_spec("arbiter.shop", [twins(tmp_path, 0, 60)])
    assert spec is not None and spec.origin == str(tmp_path / "shop.py")
    assert arbiter._stale == ["arbiter.shop"]


def test_the_pure_python_switch_imports_every_source(tmp_path, finder, monkeypatch):
    monkeypatch.setattr(arbiter._SourcesFirst, "pure", True)
    spec = finder.find_spec("arbiter.shop", [twins(tmp_path, 100, 50)])
    assert spec is not None and spec.origin.endswith("shop.py")


def test_other_packages_and_modules_without_a_compiled_twin_are_not_touched(tmp_path,
                                                                             finder):
    path = twins(tmp_path, 0, 60)
    assert finder.find_spec("shop", [path]) is None  # not arbiter's
    (tmp_path / "plain.py").write_text("")
    assert finder.find_spec("arbiter.plain", [path]) is None


def test_a_tasks_stack_goes_through_a_coroutine_that_shows_no_frame():
    async def app():
        await asyncio.sleep(10)

    class Compiled:
        """Awaited as a compiled coroutine awaits: through the ``__await__`` iterator
        of a coroutine, which shows no frame."""

        def __init__(self):
            self.inner = app()
            self.cr_await = self.inner.__await__()

        def __await__(self):
            return self.cr_await

    async def main():
        outer = Compiled()
        task = asyncio.get_running_loop().create_task(_through(outer))
        await asyncio.sleep(0.01)
        try:
            return awaiting_stack(task)
        finally:
            task.cancel()

    async def _through(awaitable):
        await awaitable

    stack = asyncio.run(main())
    assert "in _through" in stack
    assert "in app" in stack
    assert "in sleep" in stack


def test_build_names_what_runs(monkeypatch):
    import arbiter.http.protocol as protocol

    monkeypatch.setattr(arbiter, "_stale", [])
    assert arbiter.build() == ("pure Python" if protocol.__file__.endswith(".py")
                               else "compiled")
    monkeypatch.setattr(arbiter, "_stale", ["arbiter.http.wsgi"])
    assert arbiter.build() == "compiled, except arbiter.http.wsgi (edited since the install)"


def load_setup_script():
    import importlib.util

    path = Path(arbiter.__file__).resolve().parents[1] / "setup.py"
    if not path.exists():
        pytest.skip("not a checkout: no setup.py beside the package")
    spec = importlib.util.spec_from_file_location("arbiter_setup_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: nothing is built
    return module


def test_the_build_makes_c_types_of_the_slotted_classes_only():
    setup_script = load_setup_script()
    source = '''
class Plain:
    __slots__ = ("a", "b")

class One:
    __slots__ = "only"

class Derived(Plain):
    __slots__ = ("c",)

class WithDict:
    __slots__ = ("x", "__dict__")

class Free:
    pass

@decorated
class Decorated:
    __slots__ = ("d",)
'''
    assert setup_script.slotted_classes(source) == [("Plain", ["a", "b"]), ("One", ["only"])]


def test_every_compiled_modules_slots_are_declared_as_c_fields(tmp_path, monkeypatch):
    setup_script = load_setup_script()
    monkeypatch.chdir(Path(arbiter.__file__).resolve().parents[1])
    monkeypatch.setattr(setup_script, "DECLARATIONS", tmp_path)
    typed = set()
    for path in setup_script.COMPILED_MODULES:
        setup_script.write_declarations(path)
        declared = (tmp_path / (path[:-3] + ".pxd")).read_text()
        for name, slots in setup_script.slotted_classes(Path(path).read_text()):
            assert f"cdef class {name}:\n    cdef public object {', '.join(slots)}\n" \
                in declared
            typed.add(name)
    # the per-request objects are among them
    assert {"HTTPConnection", "Lifecycle", "AppResponse", "HTTPProtocol", "RequestCycle",
            "SlotWriter"} <= typed
