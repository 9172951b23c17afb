"""The HTTP side (Flask only): the app factory, middleware, auth, body parsing, errors, schemas and
the routes. Nothing outside serving/api knows about HTTP."""
