import json


def lambda_handler(event, context):
    """AWS Lambda style: the function URL payload 2.0 in, a response out."""
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "cookies": ["visited=1; Path=/"],
        "body": json.dumps({
            "greeting": f"Hello, {name}!",
            "path": event["rawPath"],
            "method": event["requestContext"]["http"]["method"],
            "request_id": context.aws_request_id,
        }),
    }
