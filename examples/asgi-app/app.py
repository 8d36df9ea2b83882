"""An ASGI app (what FastAPI and Starlette are) with no dependencies."""


async def app(scope, receive, send):
    await receive()
    body = f"ASGI says hello from {scope['path']}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})
