"""Model registration: log the trained model to MLflow and promote it through a gate on held-out metrics."""
