// mmedge captioner reference decoder for JavaScript (Node 20, onnxruntime-node; the same
// InferenceSession / Tensor API as onnxruntime-web and onnxruntime-react-native).
//
// Driven only by the files of an unzipped `mmedge package mobile` bundle: manifest.json,
// <model>/decoding.json, <model>/vocabulary.json, <model>/preprocessing.json and the graphs named
// there. It is a second implementation of mmedge.runtime.decode.beam_search, written from
// decoding.json: float32 running scores (Math.fround), top-k with the lower flat index first
// among equal scores, <end> candidates completing a hypothesis, the first completed hypothesis
// winning equal scores.
//
// Plain modern JavaScript with JSDoc types: runs directly with `node`, no build step.

import { readFileSync } from "node:fs";
import path from "node:path";

/** @typedef {{name: string, shape: (number|string)[], dtype: string}} TensorSpec */
/** @typedef {{name: string, file: string, inputs: TensorSpec[], outputs: TensorSpec[]}} GraphSpec */
/** @typedef {{tokens: number[], score: number, finished: boolean}} Hypothesis */
/** @typedef {{rows: number[], step: number[], image: number[], sourceRow: number[], word: number[], score: number[]}} Trace */

/** @param {string} file */
export function readJson(file) {
  return JSON.parse(readFileSync(file, "utf8"));
}

/** Typed-array constructors for the dtypes of test_vectors/index.json. */
export const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array, int16: Int16Array,
  uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array,
};

/** ONNX Runtime tensor type names for the same dtypes. */
const ORT_TYPES = { float32: "float32", float64: "float64", int8: "int8", uint8: "uint8", int16: "int16",
  uint16: "uint16", int32: "int32", uint32: "uint32", int64: "int64", uint64: "uint64", bool: "bool" };

/**
 * One array of a test_vectors folder: {data, dims, dtype}. Files are raw little-endian.
 * @param {string} dir the test_vectors folder
 * @param {any} index its index.json
 * @param {string} key e.g. "decoder_step.log_probs"
 */
export function readArray(dir, index, key) {
  const d = index.arrays[key];
  if (!d) throw new Error(`test vectors: no array ${JSON.stringify(key)} in index.json`);
  const Ctor = ARRAYS[d.dtype];
  if (!Ctor) throw new Error(`test vectors: ${key}: dtype ${d.dtype} not supported here`);
  const buf = readFileSync(path.join(dir, d.file));
  const count = d.shape.reduce((a, b) => a * b, 1);
  if (buf.length !== count * Ctor.BYTES_PER_ELEMENT) {
    throw new Error(`test vectors: ${key}: ${d.file} holds ${buf.length} bytes, expected ${count * Ctor.BYTES_PER_ELEMENT}`);
  }
  const copy = new Uint8Array(buf.length);
  copy.set(buf); // aligned copy (little-endian hosts: every platform ONNX Runtime ships for)
  return { data: new Ctor(copy.buffer), dims: d.shape.slice(), dtype: d.dtype };
}

/**
 * @param {any} ort the onnxruntime module (onnxruntime-node / -web / -react-native)
 * @param {{data: any, dims: number[], dtype: string}} a
 */
export function toTensor(ort, a) {
  return new ort.Tensor(ORT_TYPES[a.dtype], a.data, a.dims);
}

/** Rows `rows` of a row-major [N, ...rest] float32 array. */
function gather(data, rowSize, rows) {
  const out = new Float32Array(rows.length * rowSize);
  rows.forEach((r, i) => out.set(data.subarray(r * rowSize, (r + 1) * rowSize), i * rowSize));
  return out;
}

/**
 * The captioner of a bundle, as decoding.json describes it.
 */
export class Captioner {
  /**
   * @param {any} ort the onnxruntime module
   * @param {string} bundleDir the unzipped bundle
   * @param {string} model e.g. "captioner"
   * @param {string} platform "android" (.ort files; ONNX Runtime)
   */
  static async open(ort, bundleDir, model, platform = "android") {
    const manifest = readJson(path.join(bundleDir, "manifest.json"));
    const entry = manifest.models[model];
    if (!entry) throw new Error(`${bundleDir}: no model ${model} in manifest.json`);
    if (!entry.decoding) throw new Error(`${bundleDir}: ${model} has no decoding.json (not a captioner)`);
    const decoding = readJson(path.join(bundleDir, entry.decoding));
    const vocab = readJson(path.join(bundleDir, entry.vocabulary));
    /** @type {Record<string, GraphSpec>} */
    const graphs = {};
    for (const g of entry[platform].graphs) graphs[g.name] = g;
    const sessions = {};
    for (const name of ["encoder", "decoder_init", "decoder_step"]) {
      const file = decoding.graphs[name][platform];
      sessions[name] = await ort.InferenceSession.create(path.join(bundleDir, file));
    }
    return new Captioner(ort, decoding, vocab, graphs, sessions);
  }

  constructor(ort, decoding, vocab, graphs, sessions) {
    this.ort = ort;
    this.decoding = decoding;
    this.vocab = vocab;
    this.graphs = graphs;
    this.sessions = sessions;
    this.words = [];
    for (const [w, i] of Object.entries(vocab)) this.words[i] = w;
  }

  /**
   * encoder -> features [B, P, C] (the encoder's [B, S, S, C] reshaped).
   * @param {Float32Array} images [B, 3, H, W] preprocessed
   * @param {number[]} dims
   */
  async encode(images, dims) {
    const g = this.graphs.encoder;
    const out = await this.sessions.encoder.run({ [g.inputs[0].name]: new this.ort.Tensor("float32", images, dims) });
    const f = out[g.outputs[0].name];
    const [b, s1, s2, c] = f.dims;
    return { data: /** @type {Float32Array} */ (f.data), dims: [b, s1 * s2, c] };
  }

  /**
   * decoder_init then the beam search. `trace`, when given, receives every step's choices.
   * @param {{data: Float32Array, dims: number[]}} feats
   * @param {number} beam
   * @param {number} maxLen
   * @param {Trace | null} trace
   * @returns {Promise<Hypothesis[]>}
   */
  async decode(feats, beam = this.decoding.beam_size, maxLen = this.decoding.max_length, trace = null) {
    const ort = this.ort;
    const [nImages, P, C] = feats.dims;
    const init = await this.sessions.decoder_init.run({ features: new ort.Tensor("float32", feats.data, feats.dims) });
    const att1 = /** @type {Float32Array} */ (init.att1.data);
    const A = init.att1.dims[2];
    let h = /** @type {Float32Array} */ (init.h.data);
    let c = /** @type {Float32Array} */ (init.c.data);
    const D = init.h.dims[1];
    const start = this.decoding.start_token, end = this.decoding.end_token;
    // per image: k (beams still open), live hypotheses (tokens, float32 score), completed ones
    const images = Array.from({ length: nImages }, () => ({ k: beam, seqs: [[]], scores: [0], complete: [] }));
    let rows = Array.from({ length: nImages }, (_, i) => i); // image of each decoder_step row
    let prev = new BigInt64Array(nImages).fill(BigInt(start));
    for (let t = 0; t < maxLen; t++) {
      const R = rows.length;
      const out = await this.sessions.decoder_step.run({
        features: new ort.Tensor("float32", gather(feats.data, P * C, rows), [R, P, C]),
        att1: new ort.Tensor("float32", gather(att1, P * A, rows), [R, P, A]),
        prev_word: new ort.Tensor("int64", prev, [R]),
        h: new ort.Tensor("float32", h, [R, D]),
        c: new ort.Tensor("float32", c, [R, D]),
      });
      const lp = /** @type {Float32Array} */ (out.log_probs.data);
      const V = out.log_probs.dims[1];
      for (let i = 0; i < lp.length; i++) if (Number.isNaN(lp[i])) throw new Error("decoder_step produced NaN log-probabilities");
      if (trace) trace.rows.push(R);
      const src = [], words = [];
      let offset = 0;
      images.forEach((im, imageIndex) => {
        if (im.k === 0) return;
        const live = im.seqs.length;
        const n = live * V;
        const cand = new Float32Array(n); // float32 sums, as numpy float32 + float32
        for (let r = 0; r < live; r++) {
          for (let w = 0; w < V; w++) cand[r * V + w] = Math.fround(im.scores[r] + lp[(offset + r) * V + w]);
        }
        // top k: larger first; equal scores: lower flat index first
        const order = Array.from({ length: n }, (_, i) => i);
        order.sort((a, b) => (cand[b] - cand[a]) || (a - b));
        const top = order.slice(0, im.k);
        const seqs = [], scores = [];
        for (const idx of top) {
          const r = Math.floor(idx / V), w = idx % V, s = cand[idx];
          if (trace) {
            trace.step.push(t); trace.image.push(imageIndex); trace.sourceRow.push(offset + r);
            trace.word.push(w); trace.score.push(s);
          }
          if (w === end) {
            im.complete.push({ tokens: im.seqs[r].slice(), score: s, finished: true });
          } else {
            seqs.push([...im.seqs[r], w]); scores.push(s);
            src.push(offset + r); words.push(w);
          }
        }
        im.k = seqs.length;
        im.seqs = seqs;
        im.scores = scores;
        offset += live;
      });
      if (images.every((im) => im.k === 0) || t === maxLen - 1) break;
      // next step: rows follow their source rows; h, c from h_next, c_next of the source rows
      h = gather(/** @type {Float32Array} */ (out.h_next.data), D, src);
      c = gather(/** @type {Float32Array} */ (out.c_next.data), D, src);
      rows = src.map((r) => rows[r]);
      prev = BigInt64Array.from(words, (w) => BigInt(w));
    }
    return images.map((im) => {
      const hyps = im.complete.length ? im.complete
        : im.seqs.map((tokens, i) => ({ tokens, score: im.scores[i], finished: false }));
      let best = hyps[0];
      for (const hyp of hyps) if (hyp.score > best.score) best = hyp; // equal scores: the first wins
      return best;
    });
  }

  /** Caption text: <start>, <end>, <pad> dropped; <unk> shown as "<unk>". @param {number[]} tokens */
  text(tokens) {
    const hidden = new Set(["<start>", "<end>", "<pad>"].map((w) => this.vocab[w]));
    return tokens.filter((t) => !hidden.has(t)).map((t) => this.words[t]).join(" ");
  }
}

/**
 * preprocessing.json's normalisation: 8-bit RGB HxWx3 -> float32 NCHW [1, 3, H, W].
 * (The resize before it is Pillow's antialiased bilinear; see preprocessing.json.)
 * @param {Uint8Array} rgb
 * @param {number} height
 * @param {number} width
 * @param {{scale?: number, mean: number[], std: number[]}} params
 */
export function normalise(rgb, height, width, params) {
  const f = Math.fround;
  const scale = f(params.scale ?? 1 / 255);
  const out = new Float32Array(3 * height * width);
  for (let ch = 0; ch < 3; ch++) {
    const mean = f(params.mean[ch]), std = f(params.std[ch]);
    for (let i = 0; i < height * width; i++) out[ch * height * width + i] = f(f(f(rgb[i * 3 + ch] * scale) - mean) / std);
  }
  return out;
}

/**
 * RGBA -> RGB on an opaque white background (what mmedge does with transparency), float formula;
 * Pillow's fixed-point alpha_composite may differ by one level.
 * @param {Uint8Array} rgba
 */
export function flattenOnWhite(rgba) {
  const n = rgba.length / 4;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba[i * 4 + 3];
    for (let ch = 0; ch < 3; ch++) out[i * 3 + ch] = Math.round((rgba[i * 4 + ch] * a + 255 * (255 - a)) / 255);
  }
  return out;
}
