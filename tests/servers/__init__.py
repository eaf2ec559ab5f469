"""Real and fake network servers for inboxcheck's tests (loopback only)."""
