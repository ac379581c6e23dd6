// Compile one MJML file K times with the official MJML, in-process, and print timings as JSON.
//
//   node bench/mjml_compile.mjs FILE.mjml [K] [WARMUP]
//
// mjml is loaded once and warmed up first, so the figure is the per-compile cost a
// long-running Node service would pay, not Node start-up or module loading (reported apart).
// bench/render.py runs this as a subprocess; mjml comes from bench/node_modules.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const [file, kArg = "20", warmArg = "3"] = process.argv.slice(2);
if (!file) {
  console.error("usage: node mjml_compile.mjs FILE.mjml [K] [WARMUP]");
  process.exit(2);
}
const K = Number(kArg);
const WARMUP = Number(warmArg);

const loadStart = performance.now();
const require = createRequire(import.meta.url);
const mjml2html = require("mjml");
const { version } = require("mjml/package.json");
const loadMs = performance.now() - loadStart;

const source = readFileSync(file, "utf8");
// Options mirror what bulletin asks of mjml-python: keep comments (Outlook conditionals
// are comments), no beautify/minify, soft validation so findings do not abort the compile.
const options = { validationLevel: "soft", beautify: false, minify: false };

// MJML 5 returns a Promise; MJML 4 returned the result directly. `await` handles both.
const compile = async () => await mjml2html(source, options);

const first = performance.now();
let result = await compile();
const firstMs = performance.now() - first;
for (let i = 1; i < WARMUP; i++) await compile();

const times = [];
for (let i = 0; i < K; i++) {
  const t = performance.now();
  result = await compile();
  times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
const mid = Math.floor(times.length / 2);
const median = times.length % 2 ? times[mid] : (times[mid - 1] + times[mid]) / 2;

console.log(
  JSON.stringify({
    mjml_version: version,
    node_version: process.version,
    runs: K,
    load_ms: loadMs,
    first_ms: firstMs,
    median_ms: median,
    min_ms: times[0],
    max_ms: times[times.length - 1],
    html_bytes: Buffer.byteLength(result.html, "utf8"),
    errors: result.errors.length,
  }),
);
