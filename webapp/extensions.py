"""Flask extensions, created unbound and bound to an app in `create_app`."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from .database import Base

# Flask-SQLAlchemy adopts our own declarative base: the models subclass `Base` and
# import no Flask, and `db.session` and Alembic see the same metadata.
db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
# Storage comes from the RATELIMIT_STORAGE_URI config key. Errors are swallowed (and
# logged): when Redis is down, sign-in goes on without limits rather than failing for all.
limiter = Limiter(key_func=get_remote_address, default_limits=[], swallow_errors=True)
