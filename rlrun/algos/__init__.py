"""One file per algorithm; each is registered by name in rlrun/core/registry.py."""
