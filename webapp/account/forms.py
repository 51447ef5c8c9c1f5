from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from ..auth.forms import PostedForm, confirm_field, new_password_field
from ..passwords import MAX_LENGTH


class PasswordChangeForm(PostedForm):
    # No minimum on the current password: a wrong one is simply wrong.
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_LENGTH)])
    new_password = new_password_field("New password")
    confirm = confirm_field("Confirm new password", of="new_password")
