"""Helpers tests use to drive the real stack's components (IdP pages, tokens)."""
