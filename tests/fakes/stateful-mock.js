// stripe-stateful-mock on 127.0.0.1 only (its own CLI listens on every interface).
// Usage: node stateful-mock.js PORT   — prints "listening on 127.0.0.1:PORT" when ready.
const port = Number(process.argv[2] || 0);
const app = require('stripe-stateful-mock').createExpressApp();
const server = app.listen(port, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
