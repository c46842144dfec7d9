"""Unit tests of the torch side of the local engine."""
