"""Deciding: the pure diff of desired and synced members, guards, and plans ready to send."""
