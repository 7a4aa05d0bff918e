"""Builds the exchange: compiles the pure core (exchange/domain/) to C with mypyc when it can.

The compiled core is the same code (mypy --strict already types it) run without the
interpreter's dispatch: docs/ENGINE.md, "Compiled core". Without a C compiler, or with
EXCHANGE_PURE_PYTHON=1, the core stays plain Python and behaves the same, only slower.
A build that compiled every module records each one's source digest
(exchange/compiled_core.py reads it to tell a stale compiled module from a current one).
"""

import hashlib
import json
import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CORE = Path(__file__).resolve().parent / "exchange" / "domain"
RECORD = CORE / "compiled_sources.json"  # exchange/compiled_core.py reads it
# Left interpreted: msgspec Structs (mypyc builds a Struct's class without its class
# keywords: frozen, kw_only, array_like...), the package itself, and text.py (mypyc refuses
# surrogate code points in string literals).
INTERPRETED = frozenset(
    ("__init__.py", "commands.py", "events.py", "order_values.py", "state.py", "text.py")
)


def core_sources() -> list[Path]:
    return sorted(p for p in CORE.glob("*.py") if p.name not in INTERPRETED)


def compiled_core() -> list[Extension]:
    if os.environ.get("EXCHANGE_PURE_PYTHON"):
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 - only a compiling build needs it

    root = CORE.parents[1]
    sources = [str(p.relative_to(root)) for p in core_sources()]
    extensions = mypycify(sources, opt_level="3", group_name="exchange.domain.compiled")
    for extension in extensions:
        extension.optional = True  # no C compiler: the core stays interpreted
    return extensions


class BuildCore(build_ext):
    """build_ext that records the compiled sources' digests once every module built."""

    failed = False

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            self.failed = True
            raise

    def run(self) -> None:
        RECORD.unlink(missing_ok=True)  # a failed or partial build leaves no record
        super().run()
        if self.extensions and not self.failed:
            digests = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in core_sources()}
            RECORD.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


setup(ext_modules=compiled_core(), cmdclass={"build_ext": BuildCore})
