// Run an app graph (export/to_app.py) in a real browser: headless Chromium, driven by playwright-core, running the
// page's own code (page.mjs) on onnxruntime-web; or serve this folder so a person's browser opens the page.
//
//   node apps/web/browser.mjs MODEL(.onnx|.ort) INPUT.raw N H W C OUTPUT.raw [--threads T] [--chromium PATH]
//   node apps/web/browser.mjs --page MODEL PHOTO OUTPUT.raw [--chromium PATH]   # index.html itself, as a person uses it
//   node apps/web/browser.mjs --serve MODEL [--port 8080]     # then open http://127.0.0.1:8080/index.html
//
// Arguments, files and the JSON line on stdout are deblur.mjs's (dims, finite), with what the page ran on added
// (crossOriginIsolated, threads, the browser's version). --page picks PHOTO in index.html's file input, waits for the
// page to say it is done and writes the RGBA pixels of its result canvas (H x W x 4) to OUTPUT.raw. Chromium: --chromium, else $CHROMIUM, else chromium or
// google-chrome on the PATH (Debian: apt install chromium). The folder is served by a small HTTP server on 127.0.0.1
// with the headers that make the page cross-origin isolated (COOP/COEP), which WebAssembly threads need; the model
// at /model.onnx or /model.ort, the input at /check/input.raw; the page posts its output to /check/output.raw.
import { createServer } from 'node:http';
import { readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep, delimiter } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = resolve(fileURLToPath(new URL('.', import.meta.url)));
const TYPES = { '.html': 'text/html', '.mjs': 'text/javascript', '.js': 'text/javascript', '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream', '.ort': 'application/octet-stream', '.map': 'application/json' };

function fail(message, code = 2) {
  console.error(`error: ${message}`);
  process.exit(code);
}

function option(args, name, fallback) {
  const at = args.indexOf(name);
  return at >= 0 ? args.splice(at, 2)[1] : fallback;
}

/** A server for this folder (page, page.mjs, onnxruntime-web's files), the model and the check's input/output. */
function serve(model, input, onOutput) {
  const modelPath = `/model${extname(model).toLowerCase()}`;
  const server = createServer((request, response) => {
    const headers = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cache-Control': 'no-store' };
    let path;
    try {
      path = decodeURIComponent(new URL(request.url, 'http://x').pathname);
    } catch {
      response.writeHead(400, headers).end();  // a malformed escape: refused, the server stays up
      return;
    }
    if (request.method === 'POST' && path === '/check/output.raw' && onOutput) {
      const chunks = [];
      request.on('data', (chunk) => chunks.push(chunk));
      request.on('end', () => { onOutput(Buffer.concat(chunks)); response.writeHead(204, headers).end(); });
      return;
    }
    let file = null;
    if (path === modelPath) file = model;
    else if (path === '/check/input.raw' && input) file = input;
    else if (path === '/check') {
      response.writeHead(200, { ...headers, 'Content-Type': 'text/html' }).end('<!doctype html><title>check</title>');
      return;
    } else {
      const inside = normalize(join(HERE, path));
      if (inside.startsWith(HERE + sep) && existsSync(inside) && statSync(inside).isFile()) file = inside;
    }
    if (file === null) {
      response.writeHead(404, headers).end();
      return;
    }
    response.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file).toLowerCase()] || 'application/octet-stream' });
    response.end(readFileSync(file));
  });
  return { server, modelPath };
}

function chromiumPath(given) {
  if (given) return given;
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    for (const folder of (process.env.PATH || '').split(delimiter)) {
      if (folder && existsSync(join(folder, name))) return join(folder, name);
    }
  }
  return null;
}

async function launch(given) {
  const executable = chromiumPath(given);
  if (!executable || !existsSync(executable)) {
    fail('no Chromium found (apt install chromium, or pass --chromium PATH / set $CHROMIUM)');
  }
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: executable, args: ['--no-sandbox'] });
}

async function listening(server) {
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  return `http://127.0.0.1:${server.address().port}`;
}

const args = process.argv.slice(2);
if (args[0] === '--page') {
  const given = option(args, '--chromium', null);
  if (args.length !== 4) fail('usage: node apps/web/browser.mjs --page MODEL PHOTO OUTPUT.raw [--chromium PATH]');
  const [, model, photo, output] = args;
  for (const file of [model, photo]) if (!existsSync(file)) fail(`${file} does not exist`);
  const { server, modelPath } = serve(resolve(model), null, null);
  const base = await listening(server);
  const browser = await launch(given);
  try {
    const page = await browser.newPage();
    await page.goto(`${base}/index.html?model=${modelPath}&threads=2`);
    await page.waitForFunction(() => document.getElementById('status').textContent !== 'loading the model...');
    await page.setInputFiles('#photo', photo);
    await page.waitForFunction(() => /^(done|failed)/.test(document.getElementById('status').textContent),
      null, { timeout: 600000 });
    const said = await page.evaluate(() => {
      const canvas = document.getElementById('after');
      const status = document.getElementById('status').textContent;
      if (!status.startsWith('done')) return { status };
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      return { status, dims: [canvas.height, canvas.width, 4], pixels: Array.from(data) };
    });
    if (!said.pixels) fail(`the page said: ${said.status}`, 1);
    writeFileSync(output, Uint8Array.from(said.pixels));
    console.log(JSON.stringify({ dims: said.dims, status: said.status, browser: `Chromium ${browser.version()}` }));
  } finally {
    await browser.close();
    server.close();
  }
} else if (args[0] === '--serve') {
  const given = option(args, '--port', '8080');
  const port = Number(given);
  if (args.length !== 2) fail('usage: node apps/web/browser.mjs --serve MODEL [--port 8080]');
  if (!existsSync(args[1])) fail(`${args[1]} does not exist`);
  // the page loads onnxruntime-web from here: without it, it served a page that cannot run (a 404 for ort.min.mjs)
  if (!existsSync(join(HERE, 'node_modules', 'onnxruntime-web'))) {
    fail('onnxruntime-web is not installed: npm ci --prefix apps/web (scripts/setup.sh does it where npm is)', 1);
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`--port must be a whole number 1-65535, got ${given}`);
  const { server, modelPath } = serve(resolve(args[1]), null, null);
  // a port in use (8080 often is) or not allowed: one line, not Node's 'error' event stack
  server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.code || err.message}; pick another --port`,
    1));
  server.listen(port, '127.0.0.1', () => console.log(`open http://127.0.0.1:${port}/index.html?model=${modelPath}`));
} else {
  const threads = Number(option(args, '--threads', '1'));
  const given = option(args, '--chromium', null);
  if (args.length !== 7) {
    fail('usage: node apps/web/browser.mjs MODEL INPUT.raw N H W C OUTPUT.raw [--threads T] [--chromium PATH]');
  }
  const [model, input, ...rest] = args;
  const output = rest.pop();
  const dims = rest.map(Number);
  if (!dims.every((d) => Number.isInteger(d) && d > 0) || ![3, 4].includes(dims[3])) {
    fail(`N H W C must be whole numbers above 0, C 3 or 4; got ${rest.join(' ')}`);
  }
  for (const file of [model, input]) if (!existsSync(file)) fail(`${file} does not exist`);
  if (statSync(input).size !== dims.reduce((a, b) => a * b, 1)) {
    fail(`${input} holds ${statSync(input).size} bytes, not ${dims.join('x')}`);
  }
  let received = null;
  const { server, modelPath } = serve(resolve(model), resolve(input), (bytes) => { received = bytes; });
  const base = await listening(server);
  const browser = await launch(given);
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(`${base}/check`);
    const said = await page.evaluate(async ({ modelPath, dims, threads }) => {
      const { openModel, deblur } = await import('/page.mjs');
      const session = await openModel(modelPath, threads);
      const pixels = new Uint8Array(await (await fetch('/check/input.raw')).arrayBuffer());
      const result = await deblur(session, pixels, dims);
      await fetch('/check/output.raw', { method: 'POST', body: result.deblurred });
      return { dims: result.dims, finite: result.finite, crossOriginIsolated, threads };
    }, { modelPath, dims, threads }).catch((error) => fail(`the page failed: ${error.message.split('\n')[0]}`, 1));
    if (errors.length) fail(`the page raised: ${errors[0]}`, 1);
    if (!received) fail('the page posted no output', 1);
    writeFileSync(output, received);
    console.log(JSON.stringify({ ...said, browser: `Chromium ${browser.version()}` }));
  } finally {
    await browser.close();
    server.close();
  }
}
