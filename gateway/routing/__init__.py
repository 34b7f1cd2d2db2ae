"""Routing: which route a request belongs to, and how its path is rewritten.

table.py   Route (one compiled route) and RouteTable (host index + ordered match)
"""

from gateway.routing.table import Route, RouteTable

__all__ = ["Route", "RouteTable"]
