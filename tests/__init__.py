"""The test suite: real components (IdP, nginx, MLflow, JupyterLab, Chromium) on loopback."""
