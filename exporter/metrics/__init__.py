"""Every metric the exporter exposes, declared under its exposed name."""
