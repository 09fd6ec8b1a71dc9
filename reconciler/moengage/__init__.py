"""Talking to MoEngage: request bodies packed to the byte budget, the rate limit, the client."""
