// Headless Chromium against the real gateway and backend, driven step by step by
// tests/tests/browser.rs over stdio: each step prints one JSON line (`{"step": …}`) and,
// where the test must act (stop or restart the backend), waits for a line on stdin.
//
// Environment: VX11_GATEWAY_URL, VX11_TEST_TOKEN, VX11_PAGE_PORT (the allowed origin),
// VX11_OTHER_PAGE_PORT (an origin CORS does not allow), VX11_CHROMIUM, VX11_ARTIFACTS_DIR.
import { createServer } from "node:http";
import { readFileSync, mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const gateway = env("VX11_GATEWAY_URL");
const token = env("VX11_TEST_TOKEN");
const artifacts = env("VX11_ARTIFACTS_DIR");
const page_html = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "page.html"));

const say = (step, fields = {}) => console.log(JSON.stringify({ step, ...fields }));
const lines = createInterface({ input: process.stdin });
const stdin = lines[Symbol.asyncIterator]();
async function expect(word) {
  const { value, done } = await stdin.next();
  if (done || value.trim() !== word) throw new Error(`expected \`${word}\` on stdin, got ${done ? "EOF" : value}`);
}

// A static server per origin: the page on 127.0.0.1:<port>, another origin than the gateway's.
function serve(port) {
  const server = createServer((request, response) => {
    response.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
    response.end(page_html);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(port), "127.0.0.1", () => resolve(server));
  });
}

const servers = [await serve(env("VX11_PAGE_PORT")), await serve(env("VX11_OTHER_PAGE_PORT"))];
const browser = await chromium.launch({
  executablePath: env("VX11_CHROMIUM"),
  headless: true,
  // As root (CI containers) Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const deadline = { timeout: 30_000, polling: 50 };
const chats = (page) => page.evaluate(() => window.collected.filter((e) => e.type === "chat").map((e) => e.data.message));
async function post(page, message) {
  const answer = await page.evaluate((m) => window.post(m), message);
  if (answer.status !== 200) throw new Error(`posting ${message}: ${JSON.stringify(answer)}`);
}
async function seen(page, message) {
  await page.waitForFunction((m) => window.collected.some((e) => e.type === "chat" && e.data.message === m), message, deadline);
}

try {
  const query = `?gateway=${encodeURIComponent(gateway)}&token=${encodeURIComponent(token)}`;
  const page = await browser.newPage();
  page.on("console", (m) => console.error(`page console: ${m.text()}`));
  await page.goto(`http://127.0.0.1:${env("VX11_PAGE_PORT")}/page.html${query}`);
  await page.waitForFunction(() => window.opens >= 1, null, deadline);
  const loadId = await page.evaluate(() => window.pageLoadId);

  // Live events, posted cross-origin with a preflighted fetch.
  await post(page, "before-1");
  await post(page, "before-2");
  await seen(page, "before-2");
  say("live", { chats: await chats(page) });

  // The test stops the backend; the page keeps its EventSource and sees the outage.
  say("outage");
  await expect("down");
  const during = await page.evaluate(() => window.post("during-outage"));
  await page.waitForFunction(() => window.collected.some((e) => e.type === "backend_unavailable"), null, deadline);
  say("outage-seen", { post: during, readyState: await page.evaluate(() => window.stream.readyState) });

  // The test restarts the backend on the same port; the same page, never reloaded, resumes.
  await expect("up");
  await page.waitForFunction(() => window.stream.readyState === 1 && window.opens >= 2, null, deadline);
  await post(page, "after-1");
  await post(page, "after-2");
  await seen(page, "after-2");
  mkdirSync(artifacts, { recursive: true });
  const screenshot = join(artifacts, "browser-console.png");
  await page.screenshot({ path: screenshot, fullPage: true });
  const result = await page.evaluate(() => ({
    collected: window.collected,
    opens: window.opens,
    errors: window.errors,
    readyState: window.stream.readyState,
    pageLoadId: window.pageLoadId,
  }));
  say("resumed", { ...result, sameLoad: result.pageLoadId === loadId, screenshot });

  // A page from an origin CORS does not allow: its stream fails, its post is refused.
  const other = await browser.newPage();
  await other.goto(`http://127.0.0.1:${env("VX11_OTHER_PAGE_PORT")}/page.html${query}`);
  await other.waitForFunction(() => window.errors >= 1 && window.stream.readyState === 2, null, deadline);
  const refused = await other.evaluate(() => ({
    post: null,
    opens: window.opens,
    collected: window.collected.length,
    readyState: window.stream.readyState,
  }));
  refused.post = await other.evaluate(() => window.post("from-another-origin"));
  say("other-origin", refused);
  say("done");
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
  for (const server of servers) {
    server.closeAllConnections();
    server.close();
  }
  lines.close();
  // Nothing is left to wait for; stdin would keep the process alive.
  process.exit();
}
