"""Imported by model.py only to be a module of the model."""
