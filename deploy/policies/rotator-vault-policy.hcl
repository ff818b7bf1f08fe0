# rotator's Vault / OpenBao policy: the least a token needs to rotate the keys kept in the KV v2
# mount "secret" under "mistral/". Change the mount and the prefix to match your destinations.
# Proven by tests/integration/test_vault_policy.py: the destination contract suite passes under a
# token holding only this policy (no default policy), and fails without it.

# Read the current value, and write new versions with check-and-set. "update" writes an existing
# secret; "create" is needed only for destinations with create_missing: true.
path "secret/data/mistral/*" {
  capabilities = ["create", "read", "update"]
}

# Stamp custom_metadata (managed-by, key_id, rotation_id, fingerprint, version) after a write.
# rotator reads custom_metadata through the data path, so no "read" is needed here.
path "secret/metadata/mistral/*" {
  capabilities = ["update"]
}

# Staging and `rotator check` ask which capabilities the token has on the paths above.
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# Token health: look the token up (its TTL) and renew it. Also in Vault's default policy; listed
# so that a token created with no_default_policy works.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
