"""Ways of authenticating requests to the CCE API."""
