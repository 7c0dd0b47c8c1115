// node reflect.js HOST:PORT
// Discovers qwen.v1.Qwen through grpc.reflection.v1 only (no .proto files, no v1alpha fallback),
// then calls Tokenize and GetModelInfo with the descriptors it received. Prints one JSON object;
// exits 1 with the error on stderr when any step fails.
'use strict';
const grpc = require('@grpc/grpc-js');
const { GrpcReflection } = require('grpc-js-reflection-client');

const address = process.argv[2];
const insecure = () => grpc.credentials.createInsecure();

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 30000 }, (err, response) =>
      err ? reject(err) : resolve(response));
  });
}

(async () => {
  const reflection = new GrpcReflection(address, insecure(), {}, 'v1');
  const services = await reflection.listServices();
  const descriptor = await reflection.getDescriptorBySymbol('qwen.v1.Qwen');
  const pkg = descriptor.getPackageObject({ keepCase: true, longs: String, enums: String,
                                            defaults: true, oneofs: true });
  const client = new pkg.qwen.v1.Qwen(address, insecure());
  const tokenized = await unary(client, 'Tokenize', { text: 'Hello, world!' });
  const info = await unary(client, 'GetModelInfo', {});
  client.close();
  process.stdout.write(JSON.stringify({
    services,
    token_ids: tokenized.token_ids,
    architecture: info.architecture,
  }) + '\n');
  process.exit(0);
})().catch((e) => {
  process.stderr.write(`reflect.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
