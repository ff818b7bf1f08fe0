"""Mistral: the Admin API client, the key verifier and the local stand-in."""
