#!/usr/bin/env node
// Checks zoo models against ONNX Runtime: for each DIR (zoo/<name>) runs DIR/model.onnx on every
// DIR/test_data_set_*/input_0.pb and compares with output_0.pb (PyTorch's reference).
//   node bench/ort_check.js zoo/lenet zoo/resnet18 ...     (or: node bench/ort_check.js zoo/*/)
// Prints one line per test set; exit code 1 if any |ort - ref| > atol + rtol*|ref|.
'use strict';

const fs = require('fs');
const path = require('path');

const USAGE = `usage: node bench/ort_check.js [--atol A] [--rtol R] DIR [DIR...]
Runs DIR/model.onnx with onnxruntime-node on DIR/test_data_set_*/input_0.pb and compares with
output_0.pb (float32 TensorProtos with raw_data, as tools/export_zoo.py writes them).
defaults: --atol 1e-4 --rtol 1e-3`;

function die(msg, code = 2) {
  process.stderr.write(`ort_check.js: ${msg}\n`);
  process.exit(code);
}

function readVarint(b, p) {
  let r = 0;
  let s = 0;
  let x;
  do {
    if (p >= b.length) throw new Error('truncated varint');
    x = b[p++];
    r += (x & 0x7f) * 2 ** s;
    s += 7;
  } while (x & 0x80);
  return [r, p];
}

// Minimal onnx.TensorProto reader: dims (1), data_type (2), float_data (4), raw_data (9).
function readTensor(file) {
  const b = fs.readFileSync(file);
  const dims = [];
  let dtype = 0;
  let raw = null;
  let floats = null;
  let p = 0;
  while (p < b.length) {
    let key;
    [key, p] = readVarint(b, p);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      let v;
      [v, p] = readVarint(b, p);
      if (field === 1) dims.push(v);
      if (field === 2) dtype = v;
    } else if (wire === 2) {
      let len;
      [len, p] = readVarint(b, p);
      const sub = b.subarray(p, p + len);
      p += len;
      if (field === 1) {
        for (let q = 0; q < sub.length;) { let v; [v, q] = readVarint(sub, q); dims.push(v); }
      } else if (field === 4) {
        floats = new Float32Array(sub.buffer.slice(sub.byteOffset, sub.byteOffset + sub.length));
      } else if (field === 9) {
        raw = sub;
      }
    } else if (wire === 5) {
      p += 4;
    } else if (wire === 1) {
      p += 8;
    } else {
      throw new Error(`${file}: unsupported protobuf wire type ${wire}`);
    }
  }
  if (dtype !== 1) throw new Error(`${file}: data_type ${dtype}, only float32 (1) is supported`);
  let data = floats;
  if (raw) {
    data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  }
  if (!data) throw new Error(`${file}: no tensor data`);
  return { dims, data };
}

async function main() {
  const args = process.argv.slice(2);
  let atol = 1e-4;
  let rtol = 1e-3;
  const dirs = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-h' || a === '--help') { process.stdout.write(USAGE + '\n'); return 0; }
    if (a === '--atol' || a === '--rtol') {
      const v = Number(args[++i]);
      if (!Number.isFinite(v) || v < 0) die(`${a}: bad value '${args[i]}'`);
      if (a === '--atol') atol = v; else rtol = v;
    } else if (a.startsWith('-')) {
      die(`unknown option '${a}' (try --help)`);
    } else {
      dirs.push(a);
    }
  }
  if (dirs.length === 0) die('no model directory given (try --help)');
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    die(`cannot load onnxruntime-node (${e.code || e.message}); run bench/setup_ort.sh first`, 1);
  }
  let bad = 0;
  for (const dir of dirs) {
    const model = path.join(dir, 'model.onnx');
    if (!fs.existsSync(model)) die(`not found: ${model}`, 1);
    const sets = fs.readdirSync(dir).filter((d) => /^test_data_set_\d+$/.test(d)).sort();
    if (sets.length === 0) die(`no test_data_set_* in ${dir}`, 1);
    const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
    for (const set of sets) {
      const x = readTensor(path.join(dir, set, 'input_0.pb'));
      const ref = readTensor(path.join(dir, set, 'output_0.pb'));
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.dims) });
      const y = out[session.outputNames[0]];
      let maxDiff = 0;
      let fails = 0;
      const sameShape = JSON.stringify(y.dims) === JSON.stringify(ref.dims);
      if (sameShape) {
        for (let k = 0; k < y.data.length; k++) {
          const d = Math.abs(y.data[k] - ref.data[k]);
          maxDiff = Math.max(maxDiff, d);
          if (!(d <= atol + rtol * Math.abs(ref.data[k]))) fails++;
        }
      }
      const ok = sameShape && fails === 0;
      if (!ok) bad++;
      console.log(`${ok ? 'OK  ' : 'FAIL'} ${dir} ${set} input ${JSON.stringify(x.dims)} output ` +
        `${JSON.stringify(y.dims)}${sameShape ? '' : ` (reference ${JSON.stringify(ref.dims)})`} ` +
        `max|diff| ${maxDiff.toExponential(2)}${fails ? ` (${fails} elements out of tolerance)` : ''}`);
    }
    await session.release();
  }
  return bad ? 1 : 0;
}

main().then((rc) => process.exit(rc), (e) => die(e && e.stack ? e.stack : String(e), 1));
