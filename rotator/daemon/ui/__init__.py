"""The daemon's read-only status page at ``/ui/`` (docs/http-api.md#the-status-page).

- :mod:`~rotator.daemon.ui.source`: what a page reads (the protocol the daemon implements);
- :mod:`~rotator.daemon.ui.feed`: the daemon's implementation of it;
- :mod:`~rotator.daemon.ui.view`: states, order, filters and summary, as pure functions;
- :mod:`~rotator.daemon.ui.pages`: the HTML, every value escaped;
- :mod:`~rotator.daemon.ui.access`: sessions, CSRF tokens, the login limiter, loopback rules;
- :mod:`~rotator.daemon.ui.app`: the ASGI app mounted at ``/ui`` (headers, access, routes);
- :mod:`~rotator.daemon.ui.assets`: its stylesheet and script.

Nothing is imported here, so a part of the daemon may import one module of the package without
the others.
"""
