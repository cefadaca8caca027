"""nginx configuration templates of the identity-aware proxy and their renderer."""
