"""Backend tests: every backend against a real loopback server speaking its protocol."""
