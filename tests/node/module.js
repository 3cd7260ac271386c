// A compute module written against the real @palantir/compute-module library (see package.json),
// started by tests/test_compute_node_module.py with the environment the emulator hands out.
const { ComputeModule } = require("@palantir/compute-module");
const { Type } = require("@sinclair/typebox");

new ComputeModule({
  logger: console,
  definitions: {
    add: {
      input: Type.Object({ x: Type.Number(), y: Type.Number() }),
      output: Type.Number(),
    },
  },
})
  .register("add", async ({ x, y }) => x + y)
  .register("boom", async () => {
    throw new Error("deliberate failure");
  })
  .registerStreaming("count", async ({ n }, writable) => {
    for (let item = 0; item < n; item++) {
      writable.write(JSON.stringify({ item }));
    }
    writable.end();
  });
