"""Users, their sessions (one per signed-in device) and security events.

The schema is created only by the migrations in `migrations/`; a test proves these
models and the migrations agree. No Flask here: Flask-SQLAlchemy adopts `Base`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .database import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored normalised (trimmed, case-folded): the unique constraint is the real check.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    sessions: Mapped[list[Session]] = relationship(back_populates="user", passive_deletes=True)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


class Session(Base):
    """One signed-in device (a browser, or an API client that signed in with JSON).

    Revocation sets `revoked_at`; rows are deleted only by `flask prune`, long after.
    """

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The one public name of the session: JWT `sid`, refresh-token prefix, URLs. It is
    # unguessable but not a secret; the refresh token's MAC is what proves possession.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    counter: Mapped[int] = mapped_column(Integer, default=0)
    # The highest counter known to have reached its holder: a request carried its refresh
    # token, or an access token issued with it. Reuse of the previous token is theft
    # only once the current one was delivered (a lost answer is not theft).
    delivered_counter: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Absolute end: created_at + SESSION_MAX_AGE, never extended.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Idle end: rotated_at + REFRESH_TOKEN_TTL, kept in a column so prune can use an index.
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    # "Remember me": the refresh cookie outlives the browser.
    persistent: Mapped[bool] = mapped_column(default=False)
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    # Set for sessions of non-browser clients (bearer tokens): the name they gave.
    client_name: Mapped[str | None] = mapped_column(String(100))
    # Device Bound Session Credentials: the public key (a JWK, as JSON) the browser
    # registered, and when. Once set, only a proof from that key renews the session.
    device_key: Mapped[str | None] = mapped_column(Text)
    device_bound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="sessions")

    __table_args__ = (Index("ix_sessions_user_id_last_active_at", "user_id", "last_active_at"),)

    def __repr__(self) -> str:
        return f"<Session {self.public_id} user={self.user_id} counter={self.counter}>"


class SecurityEvent(Base):
    """Something a user should be able to see happened to their account."""

    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The session's public id, not a foreign key: events outlive pruned sessions.
    session_public_id: Mapped[str | None] = mapped_column(String(32))
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    client_name: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str | None] = mapped_column(String(200))
    # For an alert: when its owner dealt with it ("This was me", or securing the account).
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_security_events_user_id_created_at", "user_id", "created_at"),)
