"""The shipped recipes (YAML), installed as package data of exporter.recipes; see exporter/recipe.py."""
