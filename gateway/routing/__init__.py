"""Routing: which route a request belongs to, and how its path is rewritten.

table.py   Route (one compiled route) and RouteTable (host index + ordered match)
split.py   version split of a service: sticky 10,000-bucket hashing, overrides
"""

from gateway.routing.table import Route, RouteTable

__all__ = ["Route", "RouteTable"]
