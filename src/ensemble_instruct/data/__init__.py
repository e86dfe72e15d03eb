"""Data files shipped with the package: default seed tasks, instance demos, an evaluation set."""
