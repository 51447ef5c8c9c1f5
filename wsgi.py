"""The WSGI entry point: `gunicorn wsgi:app`. Also how `flask` finds the app."""

import sys

from webapp import create_app
from webapp.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    sys.exit(f"webapp refuses to start: {error}")
