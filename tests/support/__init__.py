"""Helpers that start real processes for the test suite."""
