// The page's deblurring, in the browser: an app graph (export/to_app.py) on onnxruntime-web, fed a canvas's RGBA
// pixels as they are (the graph takes 3 or 4 channels and ignores the 4th), giving back RGBA pixels to draw.
// index.html calls it for a picked photo; browser.mjs calls it in headless Chromium to check the page's output.
import * as ort from './node_modules/onnxruntime-web/dist/ort.min.mjs';

// Where the WebAssembly files lie (served beside the page); threads need a cross-origin isolated page (COOP/COEP).
ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;

/** An InferenceSession on the app graph at `url` (.onnx or .ort), on `threads` WebAssembly threads. */
export async function openModel(url, threads = 1) {
  ort.env.wasm.numThreads = crossOriginIsolated ? threads : 1;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot fetch the model ${url}: HTTP ${response.status}`);
  return ort.InferenceSession.create(new Uint8Array(await response.arrayBuffer()));
}

/** `pixels` (uint8, N x H x W x C, C = 3 or 4 in the graph's channel order) -> {deblurred: uint8 N x H x W x 3,
 * finite: one boolean per image (false: the network overflowed; that image is not to be shown)}. */
export async function deblur(session, pixels, dims) {
  const result = await session.run({ image: new ort.Tensor('uint8', pixels, dims) });
  return { deblurred: result.deblurred.data, dims: result.deblurred.dims, finite: Array.from(result.finite.data, Boolean) };
}

/** A canvas's ImageData deblurred: the same size, alpha kept. Throws where the network overflowed. */
export async function deblurImageData(session, image) {
  const { deblurred, finite } = await deblur(session, image.data, [1, image.height, image.width, 4]);
  if (!finite[0]) throw new Error('the network overflowed on this image (non-finite output): nothing to show');
  const out = new ImageData(image.width, image.height);
  for (let i = 0, j = 0; i < out.data.length; i += 4, j += 3) {
    out.data[i] = deblurred[j];
    out.data[i + 1] = deblurred[j + 1];
    out.data[i + 2] = deblurred[j + 2];
    out.data[i + 3] = image.data[i + 3];
  }
  return out;
}
