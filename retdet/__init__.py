"""retdet: a RetinaNet object-detection framework."""
__version__ = "0.1.0"
