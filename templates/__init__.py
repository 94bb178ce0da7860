"""Shipped inside the package as data, read with importlib.resources (see web/resources.py)."""
