// Node.js, AWS Lambda style: the function URL payload 2.0 in, a response out.
exports.handler = async (event, context) => {
  const name = (event.queryStringParameters || {}).name || 'world';
  console.log(`greeting ${name}`);
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ greeting: `Hello, ${name}!`, requestId: context.awsRequestId }),
  };
};
