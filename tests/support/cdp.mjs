// Drives a headless Chromium over the DevTools protocol: starts PROGRAM (Chromium, or a
// packed bootstrap that execs it) with a DevTools port on 127.0.0.1, opens a page,
// and prints one JSON line: the browser's product, the page's text once loaded, the
// WebGL renderer (SwiftShader, when its libraries were found next to the binary) and
// the milliseconds it all took. `--dump-dom` and `--screenshot` hang in the
// chrome-headless-shell @sparticuz/chromium ships, so the page is read this way.
//
// Usage: node --experimental-websocket cdp.mjs PROGRAM [ARGS...]
// Exits 1 with the browser's stderr when anything fails, 2 after 30 s in all.
import { spawn } from "node:child_process";

const [program, ...args] = process.argv.slice(2);
const started = Date.now();
const browser = spawn(
  program,
  ["--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", ...args, "about:blank"],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let stderr = "";
const fail = (why, code = 1) => {
  console.error(`cdp.mjs: ${why}\n${stderr}`);
  browser.kill("SIGKILL");
  process.exit(code);
};
setTimeout(() => fail("no answer within 30 s", 2), 30_000).unref();

const endpoint = await new Promise((resolve) => {
  browser.stderr.on("data", (data) => {
    stderr += data;
    const found = /DevTools listening on (ws:\S+)/.exec(stderr);
    if (found) resolve(found[1]);
  });
  browser.on("exit", (code, signal) => fail(`the browser exited (${code ?? signal})`));
});

const socket = new WebSocket(endpoint);
const pending = new Map();
let lastId = 0;
socket.onmessage = (event) => {
  const message = JSON.parse(event.data);
  pending.get(message.id)?.(message);
  pending.delete(message.id);
};
socket.onerror = () => fail("the DevTools connection failed");
await new Promise((resolve) => (socket.onopen = resolve));
const send = (method, params = {}, sessionId) =>
  new Promise((resolve) => {
    const id = ++lastId;
    pending.set(id, resolve);
    socket.send(JSON.stringify({ id, method, params, sessionId }));
  });
const evaluate = async (expression, session) =>
  (await send("Runtime.evaluate", { expression }, session)).result?.result?.value;

const version = await send("Browser.getVersion");
const target = await send("Target.createTarget", {
  url: "data:text/html,<p>hello from chromium</p>",
});
const attached = await send("Target.attachToTarget", {
  targetId: target.result.targetId,
  flatten: true,
});
const session = attached.result.sessionId;
let text = "";
for (let tries = 0; tries < 100 && !text.startsWith("complete:hello"); tries++) {
  text = (await evaluate("document.readyState + ':' + (document.body?.textContent ?? '')", session)) ?? "";
  if (!text.startsWith("complete:hello")) await new Promise((r) => setTimeout(r, 100));
}
const webgl = await evaluate(
  "(() => { const gl = document.createElement('canvas').getContext('webgl');" +
    " if (!gl) return 'no webgl';" +
    " const info = gl.getExtension('WEBGL_debug_renderer_info');" +
    " return gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER); })()",
  session,
);
console.log(JSON.stringify({ product: version.result.product, text, webgl, ms: Date.now() - started }));
browser.kill("SIGKILL");
process.exit(0);
