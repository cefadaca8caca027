"""JupyterLab in the compose stack: behind nginx (TLS), signing users in to MLflow through Keycloak."""

import os

c = get_config()  # noqa: F821 (injected by Jupyter when it loads this file)

# nginx terminates TLS and forwards X-Forwarded-*; Jupyter itself listens on the compose network only.
c.ServerApp.trust_xheaders = True
c.ServerApp.allow_remote_access = True
# The IdP redirects back to /mlflow/oauth/callback cross-site: Lax lets that top-level GET carry the cookies.
c.ServerApp.cookie_options = {"samesite": "Lax", "secure": True}
c.ServerApp.tornado_settings = {"xsrf_cookie_kwargs": {"samesite": "Lax", "secure": True}}

# mlflow-oidc-jupyter: the same values reach kernels through the MLFLOW_OIDC_* variables set in compose.yaml.
c.MLflowOIDC.issuer = os.environ["MLFLOW_OIDC_ISSUER"]
c.MLflowOIDC.client_id = os.environ.get("MLFLOW_OIDC_CLIENT_ID", "jupyter")
c.MLflowOIDC.audience = os.environ.get("MLFLOW_OIDC_AUDIENCE", "mlflow")
c.MLflowOIDC.upstream_url = os.environ["MLFLOW_TRACKING_URI"]
c.MLflowOIDC.scopes = os.environ.get("MLFLOW_OIDC_SCOPES", "openid profile email offline_access").split()
if os.environ.get("MLFLOW_OIDC_CA_BUNDLE"):
    c.MLflowOIDC.ca_bundle = os.environ["MLFLOW_OIDC_CA_BUNDLE"]
