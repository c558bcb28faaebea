"""Training, evaluation and synthetic data for the banet-deploy default model."""
