"""Operator commands: thin wrappers over the engine."""

from flask import Flask


def register(app: Flask) -> None:
    pass
