from flask import request
from flask_wtf import FlaskForm
from flask_wtf.form import SUBMIT_METHODS, _Auto
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from ..accounts import EMAIL_PATTERN, MAX_EMAIL_LENGTH
from ..passwords import MAX_LENGTH, MIN_LENGTH


class PostedForm(FlaskForm):
    """A form that reads only form-encoded bodies. FlaskForm would also build its data
    from a JSON body, where any JSON value (a number, a list, a deep nest) can arrive."""

    class Meta:
        def wrap_formdata(self, form, formdata):
            if formdata is _Auto:
                return request.form if request.method in SUBMIT_METHODS else None
            return formdata


def strip(value):
    return value.strip() if isinstance(value, str) else value


class LoginForm(PostedForm):
    email = EmailField("Email", filters=[strip], validators=[DataRequired(), Length(max=MAX_EMAIL_LENGTH)])
    # No minimum here: a too-short password is simply wrong, with the generic message.
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_LENGTH)])
    remember = BooleanField("Keep me signed in on this device")


def new_email_field() -> EmailField:
    """An email a person types to be written to (an account's, a reset's): the pattern applies."""
    return EmailField(
        "Email",
        filters=[strip],
        validators=[
            DataRequired(),
            Length(max=MAX_EMAIL_LENGTH),
            Regexp(EMAIL_PATTERN, message="Enter a valid email address."),
        ],
    )


def new_password_field(label: str) -> PasswordField:
    """A password being chosen: the password rules apply."""
    return PasswordField(
        label,
        validators=[
            DataRequired(),
            Length(min=MIN_LENGTH, max=MAX_LENGTH, message=f"Use {MIN_LENGTH} to {MAX_LENGTH} characters."),
        ],
    )


def confirm_field(label: str, of: str) -> PasswordField:
    """The chosen password again; it must equal the field named `of`."""
    return PasswordField(label, validators=[DataRequired(), EqualTo(of, message="The passwords do not match.")])


class RegisterForm(PostedForm):
    email = new_email_field()
    password = new_password_field("Password")
    confirm = confirm_field("Confirm password", of="password")
