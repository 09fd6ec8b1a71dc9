"""Plumbing every stage shares: errors, logs, YAML documents with their schemas, HTTP answers."""
