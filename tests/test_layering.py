"""The engine is plain Python: its modules and the models import no Flask, so they can be
used (and tested) from a script, a worker or a shell with a SQLAlchemy session alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import webapp

ENGINE_MODULES = [
    "accounts",
    "database",
    "dbapi_select",
    "device_binding",
    "devices",
    "models",
    "passwords",
    "recovery",
    "retention",
    "security_events",
    "session_queries",
    "sessions",
    "tokens",
]
WEB_FRAMEWORK = ("flask", "flask_sqlalchemy", "flask_wtf", "flask_limiter", "flask_migrate", "werkzeug")


def test_engine_modules_import_no_flask():
    # The package's __init__ builds the app (and imports Flask): load the engine modules
    # under a bare package of the same name instead, in a fresh interpreter.
    program = f"""
import sys, types
package = types.ModuleType("webapp")
package.__path__ = [{str(Path(webapp.__file__).parent)!r}]
sys.modules["webapp"] = package
for name in {ENGINE_MODULES!r}:
    __import__("webapp." + name)
print(sorted(name for name in sys.modules if name.split(".")[0] in {WEB_FRAMEWORK!r}))
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
