"""Small Lambda handlers the local-run tests serve and invoke (independent of the examples)."""
