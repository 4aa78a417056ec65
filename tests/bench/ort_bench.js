// ort_bench.js — times ONNX Runtime (onnxruntime-node, CPU) on one ONNX file, for
// tests/bench/bench_ort.sh (issue 12): the model's first input, its per-sample shape from the
// file (the batch axis set to BATCH), filled with seeded pseudo-random values in [-1, 1);
// intraOpNumThreads = THREADS, interOpNumThreads = 1, sequential execution, all graph
// optimizations; WARMUP runs of session.run, then RUNS timed ones, or more until one second
// has gone (as `dyn bench` times for one second: a small model gets many runs).
//   NODE_PATH=build/ort/node_modules node tests/bench/ort_bench.js MODEL.onnx BATCH THREADS [RUNS] [WARMUP]
// Prints one line: "median_ms MEDIAN mean_ms MEAN runs N" (milliseconds per session.run; N
// timed runs); exit status 2 on bad arguments, 1 when the model does not load or run.
'use strict';
const ort = require('onnxruntime-node');

const MIN_MS = 1000; // small models: timed runs continue until this much time has gone

function usage(msg) {
    console.error(`ort_bench: ${msg}\nusage: node ort_bench.js MODEL.onnx BATCH THREADS [RUNS] [WARMUP]`);
    process.exit(2);
}

function count(s, name, lo) {
    const v = Number(s);
    if (!Number.isInteger(v) || v < lo) usage(`${name} must be an integer >= ${lo}, not '${s}'`);
    return v;
}

async function main() {
    const a = process.argv.slice(2);
    if (a.length < 3) usage('missing arguments');
    const [file] = a;
    const batch = count(a[1], 'BATCH', 1), threads = count(a[2], 'THREADS', 1);
    let runs = a.length > 3 ? count(a[3], 'RUNS', 1) : 20;
    const warmup = a.length > 4 ? count(a[4], 'WARMUP', 0) : 3;
    const session = await ort.InferenceSession.create(file, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
        executionProviders: ['cpu'],
    });
    const meta = session.inputMetadata[0];
    const shape = meta.shape.slice();
    shape[0] = batch; // the dynamic batch axis (models here have one)
    for (const d of shape.slice(1))
        if (!Number.isInteger(d)) throw new Error(`input ${meta.name}: non-numeric axis ${d}`);
    const n = shape.reduce((x, y) => x * y, 1);
    const data = new Float32Array(n);
    let s = 1;
    for (let i = 0; i < n; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0; // LCG, seeded: the same input every run
        data[i] = s / 2147483648 - 1;
    }
    const feeds = {[meta.name]: new ort.Tensor('float32', data, shape)};
    for (let i = 0; i < warmup; i++) await session.run(feeds);
    const t = [];
    let total = 0;
    while (t.length < runs || total < MIN_MS) {
        const t0 = process.hrtime.bigint();
        await session.run(feeds);
        t.push(Number(process.hrtime.bigint() - t0) / 1e6);
        total += t[t.length - 1];
    }
    runs = t.length;
    const mean = total / runs;
    t.sort((x, y) => x - y);
    const median = runs % 2 ? t[(runs - 1) / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2;
    console.log(`median_ms ${median.toFixed(3)} mean_ms ${mean.toFixed(3)} runs ${runs}`);
    await session.release();
}

main().catch((e) => {
    console.error(`ort_bench: ${e.message || e}`);
    process.exit(1);
});
