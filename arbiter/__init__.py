"""arbiter: a process manager and HTTP server for Python WSGI applications.

This package root owns only the version string; see arbiter.cli for the entry point.
"""

__version__ = "0.1.0"
