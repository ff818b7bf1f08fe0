"""The Vault / OpenBao KV v2 store kind."""
