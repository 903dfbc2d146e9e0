// The baseline of the Chromium corpus: what @sparticuz/chromium itself does at a
// Node.js Lambda's first cold start, i.e. import the package and call
// executablePath(), which inflates its brotli archives into $TMPDIR (the cache
// check makes every later call free). bench/run copies this file next to the
// package's node_modules so that the bare import resolves, and uses it twice: to
// build the corpus (the tree it extracts) and, into an empty $TMPDIR each time, as
// the timed baseline.
//
// Prints {"path", "ms"}: ms is the import plus executablePath(), without Node's own
// start-up, which a Node.js function pays with or without the package. With
// BENCH_INFLATE_LOG set, appends that line to the file instead.
import { appendFileSync, existsSync } from "node:fs";

const t0 = process.hrtime.bigint();
const { default: chromium } = await import("@sparticuz/chromium");
const path = await chromium.executablePath();
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
if (!existsSync(path)) {
  console.error(`sparticuz-inflate: executablePath() returned ${path}, which does not exist`);
  process.exit(1);
}
const line = JSON.stringify({ path, ms }) + "\n";
if (process.env.BENCH_INFLATE_LOG) {
  appendFileSync(process.env.BENCH_INFLATE_LOG, line);
} else {
  process.stdout.write(line);
}
