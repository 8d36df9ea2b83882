"""A Flask app; Flask comes from requirements.txt, installed at deploy time
into the shared package cache."""
from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return {"hello": request.args.get("name", "world")}


@app.get("/items/<int:item>")
def item(item):
    return {"item": item}
