// Runs an ONNX model of token ids -> logits with onnxruntime (CPU, one thread, all graph
// optimizations) and writes the logits as little-endian f32 to OUT, for tests to compare.
//   node run_model.js MODEL.onnx IDS OUT.f32          IDS: comma-separated token ids
//   node run_model.js MODEL.onnx IDS OUT.ids --greedy N
//     appends N greedy tokens (argmax of the last position), writes all ids as text.
// Exits 2 with a message on stderr when the model does not load or run.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function logits(session, ids) {
  const input = new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
  const out = await session.run({ input_ids: input });
  return out.logits;
}

async function main() {
  const [model, idsText, outPath, flag, nText] = process.argv.slice(2);
  if (!model || !idsText || !outPath) throw new Error('usage: run_model.js MODEL.onnx IDS OUT [--greedy N]');
  const ids = idsText.split(',').map((s) => Number.parseInt(s, 10));
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all', logSeverityLevel: 3,
  });
  if (flag === '--greedy') {
    const n = Number.parseInt(nText, 10);
    for (let step = 0; step < n; ++step) {
      const t = await logits(session, ids);
      const vocab = t.dims[2];
      const last = t.data.subarray((ids.length - 1) * vocab, ids.length * vocab);
      let best = 0;
      for (let v = 1; v < vocab; ++v) if (last[v] > last[best]) best = v;
      ids.push(best);
    }
    fs.writeFileSync(outPath, ids.join(',') + '\n');
    return;
  }
  const t = await logits(session, ids);
  fs.writeFileSync(outPath, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

main().catch((e) => {
  process.stderr.write(`run_model.js: ${e.message}\n`);
  process.exit(2);
});
