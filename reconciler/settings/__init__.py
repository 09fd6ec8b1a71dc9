"""The operator's settings: typed dataclasses, and the config file and environment that fill them."""
