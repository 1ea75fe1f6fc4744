"""TLS and basic auth for the HTTP server, from a web-config.yml."""
