"""The test suite as a package: helpers import as ``tests.realservers``, ``tests.conftest``..."""
