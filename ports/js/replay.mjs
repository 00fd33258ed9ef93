#!/usr/bin/env node
// Replays an unzipped mmedge mobile bundle's test vectors through the JavaScript port
// (decoder.mjs) and onnxruntime-node: every graph's inputs -> expected outputs (index.json's
// criterion), the captioner's beam search (tokens, float32 scores) and its per-step trace, and the
// preprocessing vectors (alpha flattening and normalisation).
//
//   node ports/js/replay.mjs BUNDLE_DIR [--json]
//
// onnxruntime-node is resolved from ports/js/node_modules, or from the folder in
// MMEDGE_ORT_NODE_PREFIX (where `npm install onnxruntime-node` ran). Exit 0: every check passed;
// 1: a mismatch (each one named on stderr); 2: the bundle or onnxruntime-node could not be read.

import { createRequire } from "node:module";
import path from "node:path";
import { existsSync } from "node:fs";
import { Captioner, flattenOnWhite, normalise, readArray, readJson, toTensor } from "./decoder.mjs";

const args = process.argv.slice(2);
const asJson = args.includes("--json");
const bundle = args.find((a) => !a.startsWith("--"));
if (!bundle) {
  console.error("usage: node replay.mjs BUNDLE_DIR [--json]");
  process.exit(2);
}

function loadOrt() {
  const prefix = process.env.MMEDGE_ORT_NODE_PREFIX;
  const from = prefix ? path.join(path.resolve(prefix), "package.json") : import.meta.url;
  try {
    return createRequire(from)("onnxruntime-node");
  } catch (e) {
    console.error(`replay: cannot load onnxruntime-node (${e.message.split("\n")[0]}); run ` +
      "`npm install onnxruntime-node --ignore-scripts` in ports/js or set MMEDGE_ORT_NODE_PREFIX");
    process.exit(2);
  }
}

const failures = [];
const passed = [];
const fail = (msg) => failures.push(msg);

/** max |got - exp| <= tol x max |exp| (index.json's criterion); int8: cosine >= 0.9 */
function compareOutput(name, got, exp, precision, tolerances) {
  if (got.length !== exp.length) return fail(`${name}: ${got.length} values, expected ${exp.length}`);
  let maxAbs = 0, scale = 0, dot = 0, ng = 0, ne = 0;
  for (let i = 0; i < exp.length; i++) {
    const g = Number(got[i]), e = Number(exp[i]);
    maxAbs = Math.max(maxAbs, Math.abs(g - e));
    scale = Math.max(scale, Math.abs(e));
    dot += g * e; ng += g * g; ne += e * e;
  }
  if (precision === "int8") {
    const cos = ng === 0 && ne === 0 ? 1 : dot / Math.max(Math.sqrt(ng * ne), 1e-300);
    return cos >= 0.9 ? passed.push(name) : fail(`${name}: cosine ${cos.toFixed(4)} < 0.9 (int8)`);
  }
  const tol = (tolerances[precision] ?? 2e-2) * Math.max(scale, 1e-12);
  if (!(maxAbs <= tol)) return fail(`${name}: max |diff| ${maxAbs.toExponential(3)} > tolerance ${tol.toExponential(3)}`);
  passed.push(name);
}

function closeScore(got, exp, rel) {
  return Math.abs(got - exp) <= rel * Math.max(1, Math.abs(exp));
}

async function replayGraphs(ort, root, model, entry, index, dir) {
  const precision = entry.android.precision;
  for (const g of entry.android.graphs) {
    const spec = index.graphs[g.name];
    if (!spec) continue;
    const session = await ort.InferenceSession.create(path.join(root, g.file));
    const feeds = {};
    for (const key of spec.inputs) feeds[key.slice(g.name.length + 1)] = toTensor(ort, readArray(dir, index, key));
    const out = await session.run(feeds);
    for (const key of spec.expected) {
      const exp = readArray(dir, index, key);
      const got = out[key.slice(g.name.length + 1)];
      if (!got) { fail(`${model}: ${key}: the graph has no such output`); continue; }
      if (got.dims.join(",") !== exp.dims.join(",")) {
        fail(`${model}: ${key}: shape [${got.dims}] but expected [${exp.dims}]`); continue;
      }
      compareOutput(`${model}: ${key}`, got.data, exp.data, precision, index.tolerance ?? {});
    }
  }
}

async function replayBeam(ort, root, model, entry, index, dir) {
  const cap = await Captioner.open(ort, root, model, "android");
  const rel = cap.decoding.tolerance.score_relative;
  const t = index.beam_trace;
  if (!t) return fail(`${model}: index.json has no beam_trace`);
  const image = readArray(dir, index, t.images);
  const feats = await cap.encode(image.data, image.dims);
  const trace = { rows: [], step: [], image: [], sourceRow: [], word: [], score: [] };
  const hyps = await cap.decode(feats, t.beam_size, t.max_length, trace);
  // the per-step trace first: the first difference names the step
  const ref = {
    rows: readArray(dir, index, "beam.trace.rows").data, step: readArray(dir, index, "beam.trace.step").data,
    image: readArray(dir, index, "beam.trace.image").data,
    sourceRow: readArray(dir, index, "beam.trace.source_row").data,
    word: readArray(dir, index, "beam.trace.word").data, score: readArray(dir, index, "beam.trace.score").data,
  };
  let traceOk = true;
  const nSteps = Math.max(ref.rows.length, trace.rows.length);
  for (let s = 0; s < nSteps && traceOk; s++) {
    if (trace.rows[s] !== ref.rows[s]) {
      fail(`${model}: beam trace step ${s}: ${trace.rows[s] ?? "no"} rows fed, expected ${ref.rows[s] ?? "none"}`);
      traceOk = false;
    }
  }
  const n = Math.max(ref.word.length, trace.word.length);
  for (let i = 0; i < n && traceOk; i++) {
    const where = `${model}: beam trace step ${ref.step[i] ?? trace.step[i]}, image ${ref.image[i] ?? trace.image[i]}`;
    if (i >= trace.word.length || i >= ref.word.length) {
      fail(`${where}: ${trace.word.length} candidates recorded, expected ${ref.word.length}`); traceOk = false; break;
    }
    const same = trace.step[i] === ref.step[i] && trace.image[i] === ref.image[i]
      && trace.sourceRow[i] === ref.sourceRow[i] && BigInt(trace.word[i]) === BigInt(ref.word[i]);
    if (!same) {
      fail(`${where}: chose (row ${trace.sourceRow[i]}, word ${trace.word[i]}), expected (row ${ref.sourceRow[i]}, ` +
        `word ${ref.word[i]}) at candidate ${i}`);
      traceOk = false;
    } else if (!closeScore(trace.score[i], ref.score[i], rel)) {
      fail(`${where}: score ${trace.score[i]} but expected ${ref.score[i]} (tolerance ${rel} relative)`);
      traceOk = false;
    }
  }
  if (traceOk) passed.push(`${model}: beam trace (${ref.rows.length} steps, ${ref.word.length} candidates)`);
  // final tokens and scores: against the trace's result, and against the reference when fp32
  const fp32 = entry.android.precision === "fp32";
  const sets = [["beam_trace", t.tokens, t.scores]];
  if (fp32 && index.beam_search) sets.push(["beam_search", index.beam_search.expected_tokens, index.beam_search.expected_scores]);
  for (const [what, tokens, scores] of sets) {
    hyps.forEach((hyp, i) => {
      if (hyp.tokens.join(",") !== tokens[i].join(",")) {
        fail(`${model}: ${what} image ${i}: tokens [${hyp.tokens}] ("${cap.text(hyp.tokens)}"), expected [${tokens[i]}]`);
      } else if (!closeScore(hyp.score, scores[i], rel)) {
        fail(`${model}: ${what} image ${i}: score ${hyp.score}, expected ${scores[i]} (tolerance ${rel} relative)`);
      } else passed.push(`${model}: ${what} image ${i}`);
    });
  }
  if (fp32 && index.beam_search) {
    hyps.forEach((hyp, i) => {
      const want = index.beam_search.expected_captions[i];
      if (cap.text(hyp.tokens) !== want) fail(`${model}: caption ${i} "${cap.text(hyp.tokens)}", expected "${want}"`);
    });
  }
}

function replayPreprocessing(root, model, entry, index, dir) {
  if (!index.preprocessing) return;
  const params = readJson(path.join(root, entry.preprocessing)).parameters;
  const src = readArray(dir, index, "preprocess.source_rgba");
  const flat = readArray(dir, index, "preprocess.flattened_rgb");
  const mine = flattenOnWhite(/** @type {Uint8Array} */ (src.data));
  let worst = 0;
  for (let i = 0; i < mine.length; i++) worst = Math.max(worst, Math.abs(mine[i] - flat.data[i]));
  if (worst > 1) fail(`${model}: alpha flattening differs by ${worst} levels (at most 1 expected)`);
  else passed.push(`${model}: alpha flattening (max ${worst} level)`);
  const rgb = readArray(dir, index, "preprocess.resized_rgb");
  const exp = readArray(dir, index, "preprocess.image");
  const got = normalise(/** @type {Uint8Array} */ (rgb.data), rgb.dims[0], rgb.dims[1], params);
  let maxDiff = 0;
  for (let i = 0; i < got.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i] - exp.data[i]));
  if (!(maxDiff <= 1e-5)) fail(`${model}: normalised pixels differ by ${maxDiff} (> 1e-5)`);
  else passed.push(`${model}: pixel normalisation (max |diff| ${maxDiff})`);
}

async function main() {
  const root = path.resolve(bundle);
  if (!existsSync(path.join(root, "manifest.json"))) {
    console.error(`replay: ${root}: no manifest.json (unzip the bundle first)`);
    process.exit(2);
  }
  const ort = loadOrt();
  const manifest = readJson(path.join(root, "manifest.json"));
  for (const [model, entry] of Object.entries(manifest.models).sort()) {
    if (!entry.android) continue; // Core ML packages need an Apple device
    const dir = path.join(root, entry.test_vectors);
    const index = readJson(path.join(dir, "index.json"));
    await replayGraphs(ort, root, model, entry, index, dir);
    if (entry.decoding) await replayBeam(ort, root, model, entry, index, dir);
    replayPreprocessing(root, model, entry, index, dir);
  }
  if (asJson) console.log(JSON.stringify({ ok: failures.length === 0, passed, failures }, null, 1));
  for (const f of failures) console.error(`replay: MISMATCH ${f}`);
  if (failures.length) {
    console.error(`replay: ${failures.length} mismatch(es), ${passed.length} check(s) passed`);
    process.exit(1);
  }
  if (!asJson) console.log(`replay: ok, ${passed.length} checks passed (${ort.env?.versions?.common ?? "onnxruntime-node"})`);
}

main().catch((e) => {
  console.error(`replay: ${e.stack ?? e}`);
  process.exit(2);
});
