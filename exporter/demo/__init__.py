"""The built-in simulated CCE API and the demo run."""
