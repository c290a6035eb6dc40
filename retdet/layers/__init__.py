"""Small reusable layers."""
from .norm import get_norm

__all__ = ["get_norm"]
