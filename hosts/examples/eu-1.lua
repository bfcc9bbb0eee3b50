-- An example Dokku host file (issue 16). Copy it to HOSTS_DIR (default
-- ./hosts) as <name>.lua to use it: the file's name is the host's name.
-- Files under hosts/examples/ are never loaded. With no host file at all,
-- DOKKU_HOST is the one host, named "default", as before.
return {
  host = "dokku-eu-1.example.com", -- DNS name or IP address
  port = 22,                       -- default 22
  user = "dokku",                  -- default dokku
  key_path = "ssh/dokku_key",      -- default DOKKU_SSH_KEY_PATH (mode 0600 or narrower)
  known_hosts = "ssh/known_hosts", -- default DOKKU_KNOWN_HOSTS
  -- what the host may hold, in the tiers' units (any subset; none: no bound):
  -- the sum of its instances' limits, and their count
  capacity = { memory_mb = 65536, cpu = 32, instances = 100 },
  -- matched against a tier's or a hook's host_labels
  labels = { region = "eu", dedicated = false },
  draining = false,                -- true: no new instance (as POST /api/v1/hosts/eu-1/drain)
}
