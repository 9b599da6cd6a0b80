"""Search-R2 reproduction: Actor–Refiner search-integrated reasoning as a DVC pipeline.

One module per concept; the README's "Read the code in this order" is the map.
"""
__version__ = "0.1.0"
