import os


def f(event):
    """OpenLambda style: the event is the request's JSON body."""
    name = (event or {}).get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name}")
    return {"greeting": f"{os.environ.get('GREETING', 'Hello')}, {name}!"}
