"""MLflow server side of the OIDC stack: identity tags only from the verified user, overwrites only when allowed."""
