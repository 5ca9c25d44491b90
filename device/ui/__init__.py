"""Screens: pure functions from a small model to a PIL image."""
