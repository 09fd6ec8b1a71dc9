"""Alerts: which events a run makes, and sending them to the notify targets without slowing it."""
