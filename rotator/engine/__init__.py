"""The rotation engine: the journaled state machine, recovery, grace and revocation."""
