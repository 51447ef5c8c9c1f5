from wtforms import PasswordField
from wtforms.validators import DataRequired, EqualTo, Length

from ..auth.forms import PostedForm
from ..passwords import MAX_LENGTH, MIN_LENGTH


class PasswordChangeForm(PostedForm):
    # No minimum on the current password: a wrong one is simply wrong.
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_LENGTH)])
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
