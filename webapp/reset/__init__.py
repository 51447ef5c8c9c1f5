"""Account recovery over email: the forgot-password form, the reset link's page, and the
"Not you?" link of a new-sign-in email."""
