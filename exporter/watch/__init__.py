"""Which jobs are watched: the watch list and the routes that feed it."""
