"""Names shared by the CLI and the modules behind it, kept here so that the CLI can offer them as
choices without importing those modules (the search service pulls in Optuna, MLflow, LightGBM)."""

SAMPLERS = ("tpe", "guided", "random", "grid")
