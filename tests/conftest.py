"""Fixtures for every tier: the shared services (the local web server, moto S3) and the in-process
servers; each tier's conftest.py adds its own."""

pytest_plugins = ("tests.support.services", "tests.support.fixtures")
