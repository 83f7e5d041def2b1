"""Fixtures for every tier: the shared services (the local web server, moto S3), the in-process servers and
the storage initializer's isolation from the machine's settings; each tier's conftest.py adds its own."""

pytest_plugins = ("tests.support.services", "tests.support.fixtures", "tests.support.storage")
