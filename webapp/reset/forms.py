from __future__ import annotations

from wtforms import HiddenField

from ..auth.forms import PostedForm, confirm_field, new_email_field, new_password_field


class ForgotPasswordForm(PostedForm):
    email = new_email_field()


class LinkForm(PostedForm):
    # The link's token, carried by the page's form rather than kept in the browser's
    # session cookie, where a copy of the cookie jar would find it (webapp/reset/views.py).
    link = HiddenField()


class ResetPasswordForm(LinkForm):
    new_password = new_password_field("New password")
    confirm = confirm_field("Confirm new password", of="new_password")


class SecureAccountForm(LinkForm):
    """One button; the form carries its CSRF token and the link's token."""
