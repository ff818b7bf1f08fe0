"""Mistral: the Admin API client and the key verifier (the stand-in: rotator_dev.standin)."""
