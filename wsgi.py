"""The WSGI entry point: `gunicorn wsgi:app`. Also how `flask` finds the app."""

from webapp import create_app

app = create_app()
