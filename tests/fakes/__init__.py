"""Test doubles that are real servers (no mocks of our own components)."""
