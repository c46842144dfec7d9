"""HTTP routes, one module per concept; each exposes `ROUTES` for the app factory."""
