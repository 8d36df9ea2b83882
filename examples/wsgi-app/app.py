"""A WSGI app (what Flask and Django are) with no dependencies."""


def app(environ, start_response):
    path = environ["PATH_INFO"]
    body = f"WSGI says hello from {path}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body]
