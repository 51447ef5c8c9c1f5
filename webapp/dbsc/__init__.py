"""Device Bound Session Credentials (DBSC): the HTTP side. See views.py."""
