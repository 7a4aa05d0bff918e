"""The test session's guard against a stale compiled core (docs/ENGINE.md, "Compiled core").

Python imports a core module's compiled extension in place of its source, so after an edit
without a rebuild the tests would check the old code. Before any test module is collected
(and imports the core) this rebuilds the stale extensions, or stops the session saying why;
it stops it too when EXCHANGE_PURE_PYTHON asks for the interpreted core but extensions would be
imported. Only `exchange.compiled_core` is imported here: of the core, it loads the package.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange import compiled_core

ROOT = Path(__file__).resolve().parents[1]
BUILD = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"]
LOG_TAIL_LINES = 20  # of the failed build's output: its error, not mypyc's warnings before it


def pytest_sessionstart(session: pytest.Session) -> None:
    """Rebuild the compiled core when a module's source changed since its build."""
    if os.environ.get("EXCHANGE_PURE_PYTHON") and compiled_core.compiled_modules():
        pytest.exit(
            "EXCHANGE_PURE_PYTHON is set but the core has compiled modules, which Python "
            "would import: `EXCHANGE_PURE_PYTHON=1 make build` removes them",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    stale = compiled_core.stale_modules()
    if not stale:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"compiled core stale ({', '.join(stale)}): rebuilding it (setup.py build_ext)"
    if reporter is not None:
        reporter.write_line(line)
    built = subprocess.run(BUILD, cwd=ROOT, capture_output=True, text=True, check=False)
    still_stale = compiled_core.stale_modules()
    if built.returncode or still_stale:
        tail = "\n".join((built.stdout + built.stderr).splitlines()[-LOG_TAIL_LINES:])
        pytest.exit(
            f"{tail}\nthe compiled core is stale ({', '.join(still_stale or stale)}) and its "
            "rebuild failed: fix it and run `make build` (`EXCHANGE_PURE_PYTHON=1 make test` "
            "tests the core interpreted)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
