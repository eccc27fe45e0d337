"""Training code for the sentiment models (offline: scikit-learn); the service never imports it."""
