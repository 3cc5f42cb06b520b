#!/usr/bin/env node
// ONNX Runtime (onnxruntime-node 1.30.0, CPU) latency benchmark for one ONNX model.
// Install the runtime first: bench/setup_ort.sh. Prints ONE JSON line on stdout.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const ORT_VERSION = '1.30.0';

const USAGE = `usage: node bench/ort_bench.js MODEL.onnx [options]

Times InferenceSession.run of onnxruntime-node ${ORT_VERSION} (CPU) on random float32 input and prints
one JSON line: engine, model, batch, threads, iters, warmup, median_ms, p10_ms, p90_ms, mean_ms,
min_ms, max_ms, throughput_per_s (= batch*1000/median_ms), cpu_per_wall, loadavg1.

options:
  --batch B              batch size (default 1)
  --threads T            intra-op threads (default 1); inter-op threads are always 1
  --iters N              timed runs (default 20)
  --warmup W             untimed runs before timing (default 3)
  --input-shape D0,D1..  input shape; D0 is replaced by B (default: the model's first input,
                         symbolic dims -> B for dim 0, error otherwise)
  --seed S               seed of the random input (default 0)
  -h, --help             this text

The session uses intraOpNumThreads=T, interOpNumThreads=1, graphOptimizationLevel='all',
executionMode='sequential'.`;

function die(msg, code = 2) {
  process.stderr.write(`ort_bench.js: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const a = { model: null, batch: 1, threads: 1, iters: 20, warmup: 3, inputShape: null, seed: 0 };
  const intOpt = (name, v, min) => {
    if (v === undefined) die(`${name} needs a value`);
    if (!/^\d+$/.test(v) || Number(v) < min) die(`${name}: expected an integer >= ${min}, got '${v}'`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    switch (k) {
      case '-h': case '--help': process.stdout.write(USAGE + '\n'); process.exit(0); break;
      case '--batch': a.batch = intOpt(k, argv[++i], 1); break;
      case '--threads': a.threads = intOpt(k, argv[++i], 1); break;
      case '--iters': a.iters = intOpt(k, argv[++i], 1); break;
      case '--warmup': a.warmup = intOpt(k, argv[++i], 0); break;
      case '--seed': a.seed = intOpt(k, argv[++i], 0); break;
      case '--input-shape': {
        const v = argv[++i];
        if (v === undefined) die('--input-shape needs a value');
        const dims = v.split(',').map((s) => s.trim());
        if (!dims.every((d) => /^\d+$/.test(d) && Number(d) > 0)) die(`--input-shape: bad shape '${v}'`);
        a.inputShape = dims.map(Number);
        break;
      }
      case '--output-check': die('--output-check is not implemented'); break;
      default:
        if (k.startsWith('-')) die(`unknown option '${k}' (try --help)`);
        if (a.model !== null) die(`more than one model given ('${a.model}', '${k}')`);
        a.model = k;
    }
  }
  if (a.model === null) die('no MODEL.onnx given (try --help)');
  return a;
}

function loadOrt() {
  try {
    return require('onnxruntime-node');
  } catch (e) {
    die(`cannot load onnxruntime-node (${e.code || e.message}); run bench/setup_ort.sh first`, 1);
  }
  return null;
}

// xorshift32 + Box-Muller: deterministic normal(0,1) floats without dependencies.
function randomNormal(n, seed) {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  const u = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return (s + 1) / 4294967297;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const t = 2 * Math.PI * u();
    out[i] = r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

function quantile(sorted, q) {
  // linear interpolation between closest ranks (numpy's default)
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// Zoo layout is <name>/model.onnx: report <name> then; otherwise the file's basename sans .onnx.
function modelName(p) {
  const base = path.basename(p);
  if (base === 'model.onnx') return path.basename(path.dirname(path.resolve(p)));
  return base.replace(/\.onnx$/, '');
}

const round3 = (x) => Math.round(x * 1000) / 1000;

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(a.model)) die(`model file not found: ${a.model}`, 1);
  if (!fs.statSync(a.model).isFile()) die(`not a file: ${a.model}`, 1);
  const ort = loadOrt();

  const options = {
    executionProviders: ['cpu'],
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  };
  let session;
  try {
    session = await ort.InferenceSession.create(a.model, options);
  } catch (e) {
    die(`cannot create a session for ${a.model}: ${e.message}`, 1);
  }

  const meta = session.inputMetadata[0];
  const inputName = session.inputNames[0];
  let shape;
  if (a.inputShape) {
    shape = a.inputShape.slice();
    shape[0] = a.batch;
  } else {
    if (!meta || !meta.isTensor || !meta.shape || meta.shape.length === 0) {
      die(`input '${inputName}' has no known shape; pass --input-shape`, 1);
    }
    shape = meta.shape.map((d, i) => {
      if (i === 0) return a.batch;
      if (typeof d === 'number' && d > 0) return d;
      die(`input '${inputName}' dim ${i} is symbolic ('${d}'); pass --input-shape`, 1);
      return 0;
    });
  }
  if (meta && meta.isTensor && meta.type !== 'float32') {
    die(`input '${inputName}' has type ${meta.type}; only float32 inputs are supported`, 1);
  }
  const count = shape.reduce((x, y) => x * y, 1);
  const feeds = { [inputName]: new ort.Tensor('float32', randomNormal(count, a.seed), shape) };

  for (let i = 0; i < a.warmup; i++) await session.run(feeds);
  const times = [];
  const cpu0 = process.cpuUsage();
  const wall0 = process.hrtime.bigint();
  for (let i = 0; i < a.iters; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const t1 = process.hrtime.bigint();
    times.push(Number(t1 - t0) / 1e6);
  }
  const wallMs = Number(process.hrtime.bigint() - wall0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  await session.release();

  const sorted = times.slice().sort((x, y) => x - y);
  const median = quantile(sorted, 0.5);
  const result = {
    engine: `onnxruntime-${ORT_VERSION}`,
    model: modelName(a.model),
    model_path: a.model,
    batch: a.batch,
    threads: a.threads,
    iters: a.iters,
    warmup: a.warmup,
    input_shape: shape,
    median_ms: round3(median),
    p10_ms: round3(quantile(sorted, 0.1)),
    p90_ms: round3(quantile(sorted, 0.9)),
    mean_ms: round3(times.reduce((x, y) => x + y, 0) / times.length),
    min_ms: round3(sorted[0]),
    max_ms: round3(sorted[sorted.length - 1]),
    throughput_per_s: round3((a.batch * 1000) / median),
    // process CPU time / wall time over the timed loop: ~T when T threads are really busy
    cpu_per_wall: wallMs > 0 ? round3((cpu.user + cpu.system) / 1000 / wallMs) : null,
    loadavg1: round3(os.loadavg()[0]),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => die(e && e.stack ? e.stack : String(e), 1));
