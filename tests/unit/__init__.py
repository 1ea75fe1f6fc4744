"""Pure code: no server, no subprocess."""
