"""nas-lab: helper library for the Neural Architecture Search course labs."""
__version__ = "0.1.0"
