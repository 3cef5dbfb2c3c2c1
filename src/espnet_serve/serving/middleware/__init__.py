"""ASGI middlewares of the services: each answers or counts requests before the routes run."""
