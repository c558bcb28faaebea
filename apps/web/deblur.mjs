// Deblur raw uint8 pixels with an app graph (export/to_app.py) on onnxruntime-web, the WebAssembly build of ONNX
// Runtime that browsers load; run here under Node.js, so the project can check the same kernels a browser runs.
//
//   node apps/web/deblur.mjs MODEL(.onnx|.ort) INPUT.raw N H W C OUTPUT.raw [--threads T]
//
// INPUT.raw holds N*H*W*C uint8 values (C = 3 or 4, in the graph's channel order; a 4th channel is ignored);
// OUTPUT.raw receives N*H*W*3 uint8 values. One JSON line on stdout: the output's dims and each image's "finite".
// In a page the calls are the same: InferenceSession.create(bytes), a uint8 Tensor of a canvas's RGBA data.
import * as ort from 'onnxruntime-web';
import { readFileSync, writeFileSync } from 'node:fs';

const args = process.argv.slice(2);
const threadsAt = args.indexOf('--threads');
const threads = threadsAt >= 0 ? Number(args.splice(threadsAt, 2)[1]) : 1;
if (args.length !== 7) {
  console.error('usage: node apps/web/deblur.mjs MODEL INPUT.raw N H W C OUTPUT.raw [--threads T]');
  process.exit(2);
}
const [model, input, ...rest] = args;
const output = rest.pop();
const dims = rest.map(Number);
if (!dims.every((d) => Number.isInteger(d) && d > 0) || ![3, 4].includes(dims[3])) {
  console.error(`error: N H W C must be whole numbers above 0, C 3 or 4; got ${rest.join(' ')}`);
  process.exit(2);
}
const pixels = new Uint8Array(readFileSync(input));
if (pixels.length !== dims.reduce((a, b) => a * b, 1)) {
  console.error(`error: ${input} holds ${pixels.length} bytes, not ${dims.join('x')}`);
  process.exit(2);
}
ort.env.wasm.numThreads = threads;
const session = await ort.InferenceSession.create(readFileSync(model));
const result = await session.run({ image: new ort.Tensor('uint8', pixels, dims) });
writeFileSync(output, result.deblurred.data);
console.log(JSON.stringify({ dims: result.deblurred.dims, finite: Array.from(result.finite.data, Boolean) }));
