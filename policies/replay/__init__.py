"""Replay recorded traffic against policies on a simulated clock (`hybridgw replay`), and size
engines from its ISL/OSL histogram (`hybridgw size`)."""
