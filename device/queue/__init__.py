"""The outbox and the uploader.

The package shares its name with the standard library's ``queue``: run the
program only as ``python -m device`` or its console script, never by path.
"""
