"""Flask extensions, created unbound and bound to an app in `create_app`."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from .database import Base

# Flask-SQLAlchemy adopts our own declarative base: the models subclass `Base` and
# import no Flask, and `db.session` and Alembic see the same metadata.
db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
