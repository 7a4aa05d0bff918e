"""Which build of the pure core runs: compiled by mypyc (setup.py) or interpreted, and which
compiled modules are older than their source.

Python imports a compiled module in place of its source, so an edited module whose
extension was not rebuilt would run the old code: `exchange serve` says so in its banner,
the tests rebuild first (tests/conftest.py) and `make` rebuilds when a source is newer.
"""

import hashlib
import importlib.machinery
import json
from pathlib import Path

import exchange.domain

CORE_DIR = Path(exchange.domain.__file__).resolve().parent
RECORD = CORE_DIR / "compiled_sources.json"  # written by setup.py's build


def compiled_modules() -> list[str]:
    """The core's modules that have a compiled extension beside their source."""
    return sorted(
        source.stem
        for source in CORE_DIR.glob("*.py")
        if any(
            (CORE_DIR / f"{source.stem}{suffix}").exists()
            for suffix in importlib.machinery.EXTENSION_SUFFIXES
        )
    )


def stale_modules() -> list[str]:
    """Compiled modules whose source is not the one they were compiled from (all of them
    when the build left no record of its sources)."""
    compiled = compiled_modules()
    try:
        recorded: dict[str, str] = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return compiled
    return [
        name
        for name in compiled
        if recorded.get(name)
        != hashlib.sha256((CORE_DIR / f"{name}.py").read_bytes()).hexdigest()
    ]


def describe() -> str:
    """One line for banners and benchmark reports."""
    compiled = compiled_modules()
    if not compiled:
        return "interpreted"
    stale = stale_modules()
    if stale:
        return f"compiled, STALE ({', '.join(stale)}: `make build` rebuilds them)"
    return f"compiled ({len(compiled)} modules, mypyc)"


if __name__ == "__main__":  # `python -m exchange.compiled_core`: the line `make build` prints
    print(describe())
