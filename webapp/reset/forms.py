from __future__ import annotations

from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from ..accounts import EMAIL_PATTERN, MAX_EMAIL_LENGTH
from ..auth.forms import PostedForm, strip
from ..passwords import MAX_LENGTH, MIN_LENGTH


class ForgotPasswordForm(PostedForm):
    email = EmailField(
        "Email",
        filters=[strip],
        validators=[
            DataRequired(),
            Length(max=MAX_EMAIL_LENGTH),
            Regexp(EMAIL_PATTERN, message="Enter a valid email address."),
        ],
    )


class LinkForm(PostedForm):
    # The link's token, carried by the page's form rather than kept in the browser's
    # session cookie, where a copy of the cookie jar would find it (webapp/reset/views.py).
    link = HiddenField()


class ResetPasswordForm(LinkForm):
    new_password = PasswordField(
        "New password",
        validators=[
            DataRequired(),
            Length(min=MIN_LENGTH, max=MAX_LENGTH, message=f"Use {MIN_LENGTH} to {MAX_LENGTH} characters."),
        ],
    )
    confirm = PasswordField(
        "Confirm new password",
        validators=[DataRequired(), EqualTo("new_password", message="The passwords do not match.")],
    )


class SecureAccountForm(LinkForm):
    """One button; the form carries its CSRF token and the link's token."""
