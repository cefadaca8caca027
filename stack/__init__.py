"""The server-side deployment and the native local stack (IdP, gate, MLflow, nginx) for the demo and the tests."""
