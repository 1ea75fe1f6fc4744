"""The HTTP side: endpoints, the status page, the job API and the web config."""
