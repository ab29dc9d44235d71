"""ASGI 3 over arbiter's HTTP/1.1 core, on an asyncio loop: the asgi worker type's parts.

This package owns what an ASGI server adds to the shared, sans-IO core; it
parses nothing and decides no deadline itself:

* :mod:`arbiter.asgi.handler` -- :class:`ASGIHandler`: the worker's handler
  (the WSGI handler's connection info, proxy trust, error answers and access
  log, reused) plus the HTTP ``scope`` built from the same environ a WSGI app
  would get, so both kinds of app see the same client, scheme and mount
  prefix; an ASGI 2 app wrapped as ASGI 3;
* :mod:`arbiter.asgi.connection` -- :class:`HTTPProtocol`: one connection's
  :class:`~arbiter.http.lifecycle.Lifecycle` driven from asyncio's protocol
  callbacks, and :class:`RequestCycle`: one request's ``receive`` / ``send``
  (body streamed with backpressure, output waiting for the client to drain),
  its response framed by :class:`~arbiter.http.app_response.AppResponse`
  exactly as a WSGI response is;
* :mod:`arbiter.asgi.websocket` -- :class:`WebSocketSession`: a request that
  asks for a WebSocket, its ``websocket`` scope's messages over wsproto's
  frames once the lifecycle has handed the connection over;
* :mod:`arbiter.asgi.lifespan` -- :class:`Lifespan`: the ``lifespan`` scope's
  startup and shutdown (``lifespan: auto | on | off``) and its shared state.

The worker (:mod:`arbiter.workers.asgi`) owns the loop, the listeners, the
heartbeat, request timeouts and the drain.
"""
