"""Settings: the model, where each value comes from, and their checks."""
