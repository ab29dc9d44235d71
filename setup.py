"""Build step: the package as pyproject.toml describes it, its per-request modules
compiled to C extensions by Cython where this machine can.

Owns which modules are compiled (:data:`COMPILED_MODULES`: the code every request
runs through -- the HTTP core, the lifecycle, the response framing, the asgi
connection, the transports and reactor, the scoreboard row, the access log) and the
rule that compiling is an optimisation, never a requirement: with
``ARBITER_PURE_PYTHON=1`` set at install, without Cython, or when a module fails to
compile (no C compiler), the install goes on and that module runs as the plain
Python it is. The sources stay the truth: Cython compiles them unchanged (type
annotations are not taken as C types), and ``ARBITER_PURE_PYTHON=1`` at run time
makes a compiled install import them instead (see ``arbiter/__init__.py``).

Each class of theirs that has ``__slots__`` and no base class becomes a C type
whose slots are fields of its C struct (a generated ``.pxd`` declares them, in
``build/``, from the ``__slots__`` themselves: nothing to keep in step by hand).
That is where the speed is: compiled plain Python classes measured no faster in
a loaded server than the interpreter (both look attributes up by name); with C
fields, 21% less CPU per asgi request, 26% for evented (``scripts/ab_commits.py``).
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILED_MODULES = [
    "arbiter/http/protocol.py",
    "arbiter/http/lifecycle.py",
    "arbiter/http/app_response.py",
    "arbiter/http/parsers.py",
    "arbiter/http/response.py",
    "arbiter/http/wsgi.py",
    "arbiter/http/inputs.py",
    "arbiter/http/bodies.py",
    "arbiter/http/forwarded.py",
    "arbiter/http/queue_time.py",
    "arbiter/asgi/connection.py",
    "arbiter/asgi/handler.py",
    "arbiter/io/reactor.py",
    "arbiter/io/transport.py",
    "arbiter/io/blocking.py",
    "arbiter/io/poller.py",
    "arbiter/scoreboard.py",
    "arbiter/workers/base.py",
    "arbiter/logs.py",
]


DECLARATIONS = Path("build/cython-declarations")  # the generated .pxd files


def slotted_classes(source: str) -> list[tuple[str, list[str]]]:
    """The top-level classes of ``source`` with no base, no decorator and ``__slots__``
    of plain names: (class name, its slots)."""
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef) or node.bases or node.keywords \
                or node.decorator_list:
            continue
        for item in node.body:
            if isinstance(item, ast.Assign) and \
                    [getattr(t, "id", None) for t in item.targets] == ["__slots__"]:
                slots = ast.literal_eval(item.value)
                slots = [slots] if isinstance(slots, str) else list(slots)
                if slots and not {"__dict__", "__weakref__"} & set(slots):
                    found.append((node.name, slots))
    return found


def write_declarations(path: str) -> None:
    """``build/cython-declarations/<path>.pxd``: each slotted class of ``path`` a C
    type, its slots C struct fields holding any Python object."""
    lines = []
    for name, slots in slotted_classes(Path(path).read_text()):
        lines += [f"cdef class {name}:", f"    cdef public object {', '.join(slots)}", ""]
    target = DECLARATIONS / (path[:-3] + ".pxd")
    target.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def compiled_extensions() -> list:
    if os.environ.get("ARBITER_PURE_PYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("arbiter: Cython is not installed: every module stays pure Python",
              file=sys.stderr)
        return []
    # -g0: no debug tables (they double the compile time; a traceback needs none);
    # -Uunix -Ulinux: gcc predefines those names as macros, and slots are C fields here
    flags = ["-g0", "-Uunix", "-Ulinux"] if os.name == "posix" else []
    modules = [Extension(path[:-3].replace("/", "."), [path], extra_compile_args=flags)
               for path in COMPILED_MODULES]
    for path in COMPILED_MODULES:
        write_declarations(path)
    return cythonize(
        modules,
        include_path=[str(DECLARATIONS)],
        build_dir="build/cython",  # the generated C stays out of the source tree
        compiler_directives={"language_level": 3, "annotation_typing": False,
                             "binding": True},
        nthreads=os.cpu_count() or 1,
        quiet=True,
    )


class OptionalBuildExt(build_ext):
    """Modules compiled side by side (one per CPU); a module that does not compile
    stays pure Python and the install goes on."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 -- e.g. no C compiler at all
            print(f"arbiter: not compiled ({exc}): pure Python", file=sys.stderr)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"arbiter: {ext.name} not compiled ({exc}): it stays pure Python",
                  file=sys.stderr)


if __name__ == "__main__":  # (pip's build runs this file as __main__; a test imports it)
    setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
