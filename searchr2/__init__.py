"""Search-R2 reproduction: Actor–Refiner search-integrated reasoning as a DVC pipeline.

One module per concept; see the README's architecture section for the map.
"""
__version__ = "0.1.0"
