"""Settings: the model, where each value comes from, and their checks."""

# The Settings model is complete only once exporter.settings.targets has defined
# the type of its `targets` setting: import it with the package, whichever
# settings module is imported first.
from exporter.settings import targets as _targets  # noqa: F401 - imported for its effect
