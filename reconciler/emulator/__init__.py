"""A faithful local stand-in for MoEngage's Cohort Sync API, as a real HTTP server."""
