#!/usr/bin/env node
// End-to-end test: drive SaltGUI (a browser UI for salt-api) in headless
// Chromium against a salt-api compatible server (reference rest_cherrypy, or
// Brine) that serves SaltGUI itself (rest_cherrypy options app/static).
//
//   node tests/browser/saltgui.mjs --base http://127.0.0.1:PORT --out DIR \
//        [--user saltdev] [--password saltdev] [--eauth auto] \
//        [--hook-token-from-login] [--app-path /] [--timeout 45] \
//        [--salt-auth-route] [--with-stats] [--requests FILE] [--chromium /usr/bin/chromium]
//        [--minions m1,m2]
//
// Steps (each logs a line and saves numbered screenshots to DIR):
//   login     open the app, choose the eauth backend in the login form, log in
//   minions   minions page lists m1 and m2 (with grains: a salt version)
//   command   "Manual Run" box: test.ping on '*', both minions answer true
//   jobs      jobs page lists that test.ping job (by jid)
//   keys      keys page lists m1 and m2 as accepted (with fingerprints)
//   events    events page (play pressed) shows the tag of an event fired by
//             POST BASE/hook/saltgui-test while the page is open
//   stats     (only with --with-stats, before logout) SaltGUI's hidden options
//             page (CTRL-click on the logo) shows GET /stats
//   logout    log out; the login form is shown again, the session is gone
//
// The last stdout line is a JSON summary {"ok":..,"steps":[{name,ok,screenshot,..}]}.
// Exit status 0 when every step passed, 1 when a step failed, 2 on bad usage.
// Every HTTP request the browser made is written (de-duplicated) to
// DIR/requests.json (or --requests FILE), also when a step fails.
//
// Eauth: SaltGUI's login form offers a fixed list (pam, file, ldap, mysql,
// yubico) plus the lines of BASE/static/salt-auth.txt when the server has
// that file. If the requested backend (default `auto`) is not offered, the
// script adds it to the <select> as one more <option> (logged), since SaltGUI
// just sends the select's value as `eauth` in POST /login. With
// --salt-auth-route the browser is instead answered "<eauth>\n" for
// GET /static/salt-auth.txt (a Playwright route, as if the file were
// deployed), so SaltGUI offers it itself.
//
// Needs: Debian chromium and tests/browser/node_modules (scripts/browser-deps).

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";

// ---------------------------------------------------------------- arguments

function usage(msg) {
  if (msg) process.stderr.write(`saltgui: ${msg}\n`);
  process.stderr.write(
    "usage: node tests/browser/saltgui.mjs --base URL --out DIR [--user saltdev] [--password saltdev]\n" +
      "         [--eauth auto] [--hook-token-from-login] [--app-path /] [--timeout SECONDS]\n" +
      "         [--salt-auth-route] [--with-stats] [--requests FILE] [--chromium PATH] [--minions m1,m2]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    base: null,
    out: null,
    user: "saltdev",
    password: "saltdev",
    eauth: "auto",
    hookTokenFromLogin: false,
    appPath: "/",
    timeout: 45,
    saltAuthRoute: false,
    withStats: false,
    requests: null,
    chromium: process.env.CHROMIUM || "/usr/bin/chromium",
    minions: ["m1", "m2"],
  };
  const flags = { "--hook-token-from-login": "hookTokenFromLogin", "--salt-auth-route": "saltAuthRoute", "--with-stats": "withStats" };
  const vals = {
    "--base": "base", "--out": "out", "--user": "user", "--password": "password", "--eauth": "eauth",
    "--app-path": "appPath", "--timeout": "timeout", "--requests": "requests", "--chromium": "chromium",
    "--minions": "minions",
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    if (a === "-h" || a === "--help") usage();
    if (flags[a]) { o[flags[a]] = true; continue; }
    if (!vals[a]) usage(`unknown argument ${a}`);
    if (v === undefined) { v = argv[++i]; if (v === undefined) usage(`${a} needs a value`); }
    o[vals[a]] = v;
  }
  if (!o.base) usage("--base is required");
  if (!o.out) usage("--out is required");
  o.base = o.base.replace(/\/+$/, "");
  o.timeout = Number(o.timeout);
  if (!(o.timeout > 0)) usage("--timeout must be a positive number of seconds");
  if (typeof o.minions === "string") o.minions = o.minions.split(",").filter(Boolean);
  if (!o.appPath.startsWith("/")) o.appPath = "/" + o.appPath;
  return o;
}

const opt = parseArgs(process.argv.slice(2));
const T = opt.timeout * 1000;
const BASE = new URL(opt.base);
fs.mkdirSync(opt.out, { recursive: true });
const requestsFile = opt.requests || path.join(opt.out, "requests.json");

// ------------------------------------------------------------------ helpers

const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(1).padStart(5);
const log = (msg) => process.stdout.write(`[${secs()}s] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class StepError extends Error {}
const fail = (msg) => { throw new StepError(msg); };

// SaltGUI's DOM ids for minions: Utils.getIdFromMinionId
const minionDomId = (id) =>
  "m" + Buffer.from(id, "utf8").toString("base64").replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");

let shotNo = 0;
async function shot(page, label) {
  shotNo += 1;
  const file = path.join(opt.out, `${String(shotNo).padStart(2, "0")}-${label}.png`);
  try {
    await page.screenshot({ path: file, fullPage: true, timeout: 15000 });
  } catch (e) {
    log(`  (screenshot ${file} failed: ${e.message.split("\n")[0]})`);
    return null;
  }
  return file;
}

// Poll fn (async, returns truthy when done) until timeout; returns its value.
async function waitFor(what, fn, timeout = T, interval = 250) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      const extra = last instanceof Error ? ` (last error: ${last.message.split("\n")[0]})` : "";
      fail(`timed out after ${(timeout / 1000).toFixed(0)}s waiting for ${what}${extra}`);
    }
    await sleep(interval);
  }
}

// ------------------------------------------------------- request recording

const requests = []; // in order
const reqIndex = new Map(); // Request -> entry
let currentStep = "start";
const listJobsResponses = []; // {step, jids:{jid:{Function,Target}}}
let testPingResponse = null;

function redactBody(body) {
  if (body === null || typeof body !== "object") return body;
  const b = Array.isArray(body) ? body.map(redactBody) : { ...body };
  if (!Array.isArray(b)) {
    if ("password" in b) b.password = "<redacted>";
    if ("token" in b) b.token = "<token>";
  }
  return b;
}

function normBody(body) {
  // for de-duplication: values that differ between runs become placeholders
  if (body === null || typeof body !== "object" || Array.isArray(body)) return body;
  const b = { ...body };
  if (typeof b.jid === "string") b.jid = "<jid>";
  if ("nonce" in b) b.nonce = "<nonce>";
  return b;
}

function headerState(v) {
  if (v === undefined) return "absent";
  if (v === "") return "empty";
  return "set";
}

function cookieNames(v) {
  if (!v) return [];
  return v.split(";").map((s) => s.trim().split("=")[0]).filter(Boolean);
}

function recordRequest(req) {
  const u = new URL(req.url());
  if (u.origin !== BASE.origin) {
    const e = { step: currentStep, method: req.method(), url: req.url(), foreign: true };
    requests.push(e);
    reqIndex.set(req, e);
    return;
  }
  let body = null;
  const raw = req.postData();
  if (raw !== null && raw !== undefined) {
    try { body = JSON.parse(raw); } catch { body = raw; }
  }
  const e = {
    seq: requests.length + 1,
    t: Number(secs()),
    step: currentStep,
    method: req.method(),
    path: u.pathname,
    query: u.search || "",
    resourceType: req.resourceType(),
    page: (() => { try { return new URL(req.frame().url()).hash || "(none)"; } catch { return null; } })(),
    body: redactBody(body),
    headers: null,
    status: null,
    responseHeaders: null,
    failure: null,
    ms: null,
    _t: Date.now(),
  };
  requests.push(e);
  reqIndex.set(req, e);
  e._provisional = req.headers();
  e._headersPromise = req.allHeaders().then((h) => setHeaders(e, h)).catch(() => {});
}

function setHeaders(e, h, provisional = false) {
  const keep = {};
  for (const k of ["accept", "content-type", "cache-control", "x-auth-token", "cookie", "origin", "last-event-id"]) {
    if (h[k] !== undefined) keep[k] = h[k];
  }
  if (keep["x-auth-token"]) keep["x-auth-token"] = "<token>";
  if (keep.cookie !== undefined) keep.cookie = cookieNames(keep.cookie).map((n) => `${n}=<value>`).join("; ");
  e.headers = keep;
  e.xAuthToken = headerState(h["x-auth-token"]);
  e.cookies = provisional ? ["(unknown: no answer, provisional headers only)"] : cookieNames(h.cookie);
}

function recordResponse(resp) {
  const e = reqIndex.get(resp.request());
  if (!e || e.foreign) return;
  e.status = resp.status();
  e.headersMs = Date.now() - e._t;
  e._respPromise = resp.allHeaders().then((h) => {
    const keep = {};
    for (const k of ["content-type", "set-cookie", "cache-control", "access-control-allow-origin", "www-authenticate"]) {
      if (h[k] !== undefined) keep[k] = h[k];
    }
    if (keep["set-cookie"]) {
      keep["set-cookie"] = keep["set-cookie"].split("\n").map((c) => c.replace(/^([^=]+)=[^;]*/, "$1=<value>")).join("\n");
    }
    e.responseHeaders = keep;
  }).catch(() => {});
  // a sample of each JSON answer (not the event stream), for requests.json
  const rct = resp.headers()["content-type"] || "";
  if (e.resourceType === "fetch" && /json/.test(rct)) {
    e._bodyPromise = resp.text().then((t) => {
      t = t.replace(/("token"\s*:\s*")[^"]*"/g, '$1<token>"');
      e.responseSample = t.length > 4000 ? t.slice(0, 4000) + "...(" + t.length + " chars)" : t;
    }).catch(() => {});
  }
  // remember what we need from some bodies
  const b = e.body;
  if (e.method === "POST" && e.path === "/" && b && typeof b === "object" && resp.status() === 200) {
    if (b.fun === "jobs.list_jobs" || b.fun === "test.ping") {
      const step = currentStep;
      resp.json().then((j) => {
        if (b.fun === "jobs.list_jobs") {
          listJobsResponses.push({ step, jobs: (j && j.return && j.return[0]) || {} });
        } else if (step === "command") {
          testPingResponse = j;
        }
      }).catch(() => {});
    }
  }
}

function recordFailure(req) {
  const e = reqIndex.get(req);
  if (e) { e.failure = (req.failure() && req.failure().errorText) || "failed"; e.ms = Date.now() - e._t; }
}

function recordFinished(req) {
  const e = reqIndex.get(req);
  if (e && !e.foreign) e.ms = Date.now() - e._t;
}

async function settle(timeout = 10000) {
  // let in-flight requests (not the event stream) finish, so the log has their answers
  const end = Date.now() + timeout;
  const pending = () => requests.filter((e) => !e.foreign && e.ms === null && e.resourceType !== "eventsource");
  while (pending().length && Date.now() < end) await sleep(200);
  return pending();
}

async function writeRequests() {
  await Promise.race([Promise.all(requests.flatMap((e) => [e._headersPromise, e._respPromise, e._bodyPromise].filter(Boolean))), sleep(5000)]);
  for (const e of requests) if (!e.foreign && !e.headers && e._provisional) setHeaders(e, e._provisional, true);
  const clean = requests.map(({ _headersPromise, _respPromise, _bodyPromise, _t, _provisional, ...rest }) => rest);
  // de-duplicated view
  const dedup = new Map();
  const statics = new Map();
  for (const e of clean) {
    if (e.foreign) continue;
    const h = e.headers || {};
    if (e.method === "GET" && e.path.startsWith("/static/")) {
      const k = e.path;
      const st = statics.get(k) || { path: e.path, accept: h.accept, xAuthToken: e.xAuthToken, statuses: [], contentType: null, count: 0, by: e.resourceType };
      st.count += 1;
      if (e.status !== null && !st.statuses.includes(e.status)) st.statuses.push(e.status);
      st.contentType = (e.responseHeaders && e.responseHeaders["content-type"]) || st.contentType;
      statics.set(k, st);
      continue;
    }
    const key = JSON.stringify([e.method, e.path, e.query, normBody(e.body), h.accept, h["content-type"],
      e.xAuthToken, (e.cookies || []).join(","), e.resourceType]);
    let d = dedup.get(key);
    if (!d) {
      d = {
        method: e.method,
        path: e.path + e.query,
        resourceType: e.resourceType,
        body: normBody(e.body),
        accept: h.accept,
        contentType: h["content-type"],
        xAuthToken: e.xAuthToken,
        cookies: e.cookies,
        statuses: [],
        responseContentTypes: [],
        setCookie: undefined,
        failures: [],
        steps: [],
        pages: [],
        maxMs: 0,
        count: 0,
      };
      dedup.set(key, d);
    }
    d.count += 1;
    if (e.status !== null && !d.statuses.includes(e.status)) d.statuses.push(e.status);
    const rct = e.responseHeaders && e.responseHeaders["content-type"];
    if (rct && !d.responseContentTypes.includes(rct)) d.responseContentTypes.push(rct);
    if (e.responseHeaders && e.responseHeaders["set-cookie"]) d.setCookie = e.responseHeaders["set-cookie"];
    if (e.responseSample && d.responseSample === undefined && e.status === 200) d.responseSample = e.responseSample;
    if (e.failure && !d.failures.includes(e.failure)) d.failures.push(e.failure);
    if (!d.steps.includes(e.step)) d.steps.push(e.step);
    if (e.page && !d.pages.includes(e.page)) d.pages.push(e.page);
    if (e.ms !== null && e.ms > d.maxMs) d.maxMs = e.ms;
    if (e.status === null && !e.failure) d.failures.includes("no answer when the browser closed") || d.failures.push("no answer when the browser closed");
  }
  const foreign = clean.filter((e) => e.foreign).map((e) => `${e.method} ${e.url}`);
  const out = {
    base: opt.base,
    generated: new Date().toISOString(),
    note: "deduplicated: API requests keyed by method, path, body (jid/nonce normalized), Accept, Content-Type, X-Auth-Token state, cookie names; static: GET /static/** by path; all: every request in order (password/token redacted)",
    deduplicated: [...dedup.values()],
    static: [...statics.values()],
    foreign,
    all: clean,
  };
  fs.writeFileSync(requestsFile, JSON.stringify(out, null, 2) + "\n");
  return out;
}

// ------------------------------------------------------------ page helpers

async function pageDiag(page) {
  // what the page showed: URL, current route, notices, visible text (short)
  try {
    return await page.evaluate(() => {
      const cur = document.querySelector(".route.current");
      const vis = (el) => el && el.offsetParent !== null;
      const notice = document.getElementById("notice-wrapper");
      const popup = document.getElementById("popup-run-command");
      const warning = document.getElementById("warning");
      const txt = (s, n = 1500) => (s || "").replace(/\s+\n/g, "\n").replace(/[ \t]+/g, " ").trim().slice(0, n);
      return {
        url: location.href,
        route: cur ? cur.id : null,
        notice: notice ? txt(notice.innerText, 300) : null,
        warning: vis(warning) ? txt(warning.innerText, 300) : null,
        popup: vis(popup) ? txt(popup.innerText, 1500) : null,
        text: cur ? txt(cur.innerText) : txt(document.body.innerText),
        token: !!sessionStorage.getItem("token"),
      };
    });
  } catch (e) {
    return { error: e.message.split("\n")[0] };
  }
}

// optional files SaltGUI asks for; a 404 for them is normal
const OPTIONAL_STATIC = new Set(["/static/salt-auth.txt", "/static/salt-motd.txt", "/static/salt-motd.html", "/static/minions.txt"]);

function httpProblems(sinceSeq = 0) {
  return requests
    .filter((e) => !e.foreign && e.seq > sinceSeq && ((e.status !== null && e.status >= 400) || (e.failure && e.failure !== "net::ERR_ABORTED")))
    .filter((e) => !(e.status === 404 && OPTIONAL_STATIC.has(e.path)))
    .map((e) => `${e.method} ${e.path}${e.query}${e.body && e.body.fun ? ` (${e.body.client} ${e.body.fun})` : ""} -> ${e.status ?? ""} ${e.failure ?? ""}`.trim());
}

async function gotoMenu(page, name, wait = true) {
  // full menu item (wide window); mini menu as a fallback
  const full = page.locator(`#button-${name}1`);
  if (await full.isVisible()) {
    await full.click();
  } else {
    await page.locator("#minimenu-top").hover();
    await page.locator(`#button-${name}2`).click();
  }
  await page.mouse.move(5, 890); // away from the menu, so no dropdown shows in screenshots
  if (!wait) return;
  await waitFor(`page #page-${name} to become current (URL #${name})`, () =>
    page.evaluate((n) => {
      const el = document.getElementById("page-" + n);
      return location.hash === "#" + n && el && el.classList.contains("current");
    }, name));
}

async function browserEvents(page) {
  return page.evaluate(() => window.__saltguiTest || null).catch(() => null);
}

// ------------------------------------------------------------------- steps

async function stepLogin(page, ctx) {
  const url = opt.base + opt.appPath;
  log(`  opening ${url}`);
  const resp = await page.goto(url, { waitUntil: "domcontentloaded", timeout: T });
  if (!resp) fail(`no response for ${url}`);
  const ct = resp.headers()["content-type"] || "";
  if (resp.status() !== 200 || !ct.includes("text/html")) {
    fail(`GET ${opt.appPath} answered ${resp.status()} ${ct} (expected 200 text/html: the SaltGUI index.html)`);
  }
  await page.locator("#username").waitFor({ state: "visible", timeout: T }).catch(() =>
    fail("login form (#username) not shown: SaltGUI did not start (static/scripts not served?)"));
  // SaltGUI rebuilds the eauth <select> when its GET /static/salt-auth.txt settles
  await waitFor("SaltGUI to load static/salt-auth.txt (localStorage salt-auth-txt)", () =>
    page.evaluate(() => localStorage.getItem("salt-auth-txt") !== null));
  const sel = page.locator("#page-login select");
  const offered = await sel.evaluate((s) => [...s.options].map((o) => o.value));
  log(`  eauth backends offered by SaltGUI: ${offered.join(", ")}`);
  if (offered.includes(opt.eauth)) {
    ctx.eauthHow = opt.saltAuthRoute ? "offered (salt-auth.txt via route)" : "offered by SaltGUI";
  } else {
    log(`  '${opt.eauth}' is not offered (server has no static/salt-auth.txt listing it): adding it to the select`);
    await sel.evaluate((s, v) => {
      const o = document.createElement("option");
      o.value = v; o.textContent = v;
      s.append(o);
    }, opt.eauth);
    ctx.eauthHow = "option added to the select";
  }
  if (await sel.isVisible()) {
    await sel.selectOption(opt.eauth);
  } else {
    // salt-auth.txt with a single CLEAR entry hides the select; it is preselected
    await sel.evaluate((s, v) => { s.value = v; }, opt.eauth);
  }
  await page.fill("#username", opt.user);
  await page.fill("#password", opt.password);
  await shot(page, "login-form");
  const loginResp = page.waitForResponse((r) => r.url() === opt.base + "/login" && r.request().method() === "POST", { timeout: T });
  await page.click("#login-button");
  const lr = await loginResp.catch(() => fail("SaltGUI made no POST /login after clicking Login"));
  log(`  POST /login -> ${lr.status()}`);
  if (lr.status() !== 200) {
    await sleep(500);
    const d = await pageDiag(page);
    fail(`POST /login answered ${lr.status()}; the login page says: ${JSON.stringify(d.notice)}`);
  }
  await waitFor("SaltGUI to leave the login page for #minions after login", async () => {
    const st = await page.evaluate(() => ({
      hash: location.hash, token: sessionStorage.getItem("token"),
      cur: (document.querySelector(".route.current") || {}).id,
      notice: (document.getElementById("notice-wrapper") || {}).innerText,
    }));
    if (st.notice && /failed|error|permission|unavailable/i.test(st.notice)) fail(`login page says: ${st.notice.trim()}`);
    return st.token && st.hash === "#minions" && st.cur === "page-minions";
  });
  ctx.token = await page.evaluate(() => sessionStorage.getItem("token"));
  const lrData = await page.evaluate(() => JSON.parse(sessionStorage.getItem("login_response") || "null"));
  log(`  logged in as ${lrData && lrData.user} (eauth ${lrData && lrData.eauth}), token in sessionStorage, expire in ${lrData ? Math.round(lrData.expire - Date.now() / 1000) : "?"}s`);
  return shot(page, "logged-in");
}

async function stepMinions(page) {
  const ids = opt.minions.map((m) => [m, minionDomId(m)]);
  await waitFor(`minions ${opt.minions.join(", ")} listed with a salt version (wheel key.list_all + local grains.items)`, () =>
    page.evaluate((ids) => ids.every(([m, dom]) => {
      const tr = document.querySelector(`#page-minions #minions-panel tr#${dom}`);
      if (!tr || !tr.innerText.includes(m)) return false;
      const v = tr.querySelector(".saltversion");
      return v && /\d/.test(v.innerText);
    }), ids));
  const rows = await page.evaluate((ids) => ids.map(([m, dom]) => {
    const tr = document.querySelector(`#page-minions #minions-panel tr#${dom}`);
    return `${m}: ${tr.innerText.replace(/\s+/g, " ").trim()}`;
  }), ids);
  for (const r of rows) log(`  ${r}`);
  return shot(page, "minions");
}

async function stepCommand(page, ctx) {
  ctx.jobsBefore = new Set();
  for (const r of listJobsResponses) for (const jid of Object.keys(r.jobs)) ctx.jobsBefore.add(jid);
  await page.evaluate(() => { window.__saltguiTest.mark = window.__saltguiTest.messages.length; });
  await page.click("#button-manual-run");
  await page.locator("#popup-run-command").waitFor({ state: "visible", timeout: T });
  await page.fill("#target", "*");
  await page.fill("#command", "test.ping");
  await shot(page, "command-box");
  const respP = page.waitForResponse((r) => {
    const q = r.request();
    if (q.method() !== "POST" || new URL(r.url()).pathname !== "/") return false;
    try { return JSON.parse(q.postData() || "{}").fun === "test.ping"; } catch { return false; }
  }, { timeout: T });
  await page.click("#run-command");
  const resp = await respP.catch(() => fail("SaltGUI made no POST / with fun test.ping after 'Run command'"));
  const reqBody = JSON.parse(resp.request().postData());
  log(`  POST / ${JSON.stringify(reqBody)} -> ${resp.status()}`);
  if (resp.status() !== 200) fail(`POST / (local test.ping) answered ${resp.status()}`);
  const out = await waitFor("the output of test.ping to show every minion answering true", async () => {
    const t = await page.locator("#popup-output").innerText();
    if (/^ERROR/m.test(t)) fail(`command box shows an error: ${t.slice(0, 500)}`);
    return opt.minions.every((m) => new RegExp(`(^|\\n)\\s*${m}\\s*:\\s*true\\b`, "i").test(t)) ? t : null;
  });
  log(`  output: ${out.replace(/\s+/g, " ").trim().slice(0, 200)}`);
  const file = await shot(page, "command-output");
  // the jid of this job: from the event stream (salt/job/<jid>/new)
  const ev = await browserEvents(page);
  ctx.pingJids = [];
  if (ev) {
    for (const m of ev.messages.slice(ev.mark || 0)) {
      const mm = /^salt\/job\/(\d+)\/new$/.exec(m.tag || "");
      if (mm && m.fun === "test.ping" && !ctx.pingJids.includes(mm[1])) ctx.pingJids.push(mm[1]);
    }
  }
  log(`  jid(s) from the event stream: ${ctx.pingJids.join(", ") || "(none seen)"}`);
  await page.click("#cmd-close-button");
  await page.locator("#popup-run-command").waitFor({ state: "hidden", timeout: T });
  return file;
}

async function stepJobs(page, ctx) {
  const nBefore = listJobsResponses.length;
  await gotoMenu(page, "jobs");
  await waitFor("runner jobs.list_jobs answer for the jobs page", () => listJobsResponses.length > nBefore);
  let jids = [...ctx.pingJids];
  if (!jids.length) {
    // fall back: test.ping jobs that were not listed before the command ran
    for (const r of listJobsResponses.slice(nBefore)) {
      for (const [jid, j] of Object.entries(r.jobs)) {
        if (j.Function === "test.ping" && !ctx.jobsBefore.has(jid) && !jids.includes(jid)) jids.push(jid);
      }
    }
    if (!ctx.jobsBefore.size) fail("no jid for the test.ping job: none in the event stream, and no jobs.list_jobs answer before the command to compare with");
    log(`  jid(s) from jobs.list_jobs (new since the command): ${jids.join(", ") || "(none)"}`);
  }
  if (!jids.length) fail("the test.ping job run in step 'command' is not in jobs.list_jobs");
  const row = await waitFor(`a jobs row for ${jids.map((j) => "j" + j).join(" or ")} with function test.ping`, () =>
    page.evaluate((jids) => {
      for (const jid of jids) {
        const tr = document.querySelector(`#page-jobs tr#j${jid}`);
        if (tr && tr.querySelector("td.function") && tr.querySelector("td.function").innerText.includes("test.ping")) {
          return tr.innerText.replace(/\s+/g, " ").trim();
        }
      }
      return null;
    }, jids));
  log(`  row: ${row}`);
  // the details column is filled from runner jobs.list_job (one job a second, newest first)
  const n = opt.minions.length;
  const many = (k, one, more) => `${k} ${k === 1 ? one : more}`;
  const want = [many(n, "minion", "minions"), many(n, "result", "results"), many(n, "success", "successes")];
  const details = await waitFor(`the job's details column (runner jobs.list_job) to say "${want.join(", ")}"`, () =>
    page.evaluate(([jids, want]) => {
      for (const jid of jids) {
        const tr = document.querySelector(`#page-jobs tr#j${jid}`);
        const d = tr && tr.querySelector("td.details");
        if (!d) continue;
        const t = d.innerText.replace(/\s+/g, " ").trim();
        if (/\(error\)|\(skipped\)/.test(t)) throw new Error(`details column says ${t}: ${d.querySelector("span") ? d.querySelector("span").title || "" : ""}`);
        if (want.every((w) => t.includes(w))) return `${t} (status: ${(tr.querySelector("span.job-status") || {}).innerText || "?"})`;
      }
      return null;
    }, [jids, want]));
  log(`  details: ${details}`);
  return shot(page, "jobs");
}

async function stepKeys(page) {
  await gotoMenu(page, "keys");
  const ids = opt.minions.map((m) => [m, minionDomId(m)]);
  await waitFor(`keys ${opt.minions.join(", ")} listed as accepted (wheel key.list_all)`, () =>
    page.evaluate((ids) => ids.every(([m, dom]) => {
      const tr = document.querySelector(`#page-keys #keys-panel tr#${dom}`);
      return tr && tr.innerText.includes(m) && tr.querySelector("td.status.accepted, td.accepted") !== null &&
        /accepted/.test(tr.innerText);
    }), ids));
  await waitFor("key fingerprints (wheel key.finger)", () =>
    page.evaluate((ids) => ids.every(([, dom]) => {
      const f = document.querySelector(`#page-keys #keys-panel tr#${dom} .fingerprint`);
      return f && /^[0-9a-f:]{20,}$/i.test(f.innerText.trim());
    }), ids));
  const rows = await page.evaluate((ids) => ids.map(([m, dom]) =>
    `${m}: ${document.querySelector(`#page-keys #keys-panel tr#${dom}`).innerText.replace(/\s+/g, " ").trim()}`), ids);
  for (const r of rows) log(`  ${r}`);
  return shot(page, "keys");
}

async function hookToken(ctx) {
  if (!opt.hookTokenFromLogin) return ctx.token;
  const r = await fetch(opt.base + "/login", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ username: opt.user, password: opt.password, eauth: opt.eauth }),
  });
  if (r.status !== 200) fail(`separate POST /login for the hook token answered ${r.status}`);
  const j = await r.json();
  return j.return[0].token;
}

async function stepEvents(page, ctx) {
  await gotoMenu(page, "events");
  // the events panel starts paused: press play
  const play = page.locator("#events-panel span.small-button", { hasText: "\u2BC8" });
  await play.click({ timeout: T });
  await waitFor("events panel in play mode", () => page.locator("#events-panel span.small-button", { hasText: "\u23F8" }).isVisible());
  const es = await browserEvents(page);
  if (es) {
    log(`  EventSource: ${es.sources.map((s) => `${s.url} state=${s.state} opened=${s.opened} errors=${s.errors}`).join("; ") || "none created"}; ${es.messages.length} message(s) so far`);
  }
  await shot(page, "events-before");
  const token = await hookToken(ctx);
  if (!token) fail("no token for the hook (sessionStorage token empty)");
  const tag = "salt/netapi/hook/saltgui-test";
  const nonce = `brine-${process.pid}-${Date.now()}`;
  ctx.hookPosts = 0;
  const fire = async () => {
    ctx.hookPosts += 1;
    const r = await fetch(opt.base + "/hook/saltgui-test", {
      method: "POST",
      headers: { "X-Auth-Token": token, "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ nonce, from: "tests/browser/saltgui.mjs" }),
    });
    const txt = await r.text();
    log(`  POST /hook/saltgui-test #${ctx.hookPosts} (X-Auth-Token) -> ${r.status} ${txt.slice(0, 100)}`);
    if (r.status !== 200) fail(`POST /hook/saltgui-test answered ${r.status}: ${txt.slice(0, 300)}`);
  };
  await fire();
  const seen = async () => page.evaluate(([tag, nonce]) => {
    for (const tr of document.querySelectorAll("#events-panel table tbody tr")) {
      const tds = tr.querySelectorAll("td");
      if (tds.length >= 3 && tds[1].innerText.trim() === tag && tds[2].innerText.includes(nonce)) {
        return tr.innerText.replace(/\s+/g, " ").trim();
      }
    }
    return null;
  }, [tag, nonce]);
  let row = null;
  const end = Date.now() + T;
  let nextFire = Date.now() + 10000;
  while (!(row = await seen())) {
    if (Date.now() > end) {
      const ev = await browserEvents(page);
      const got = ev ? ev.messages.filter((m) => m.tag === tag).length : "?";
      const srcs = ev ? ev.sources.map((s) => `${s.url} state=${s.state} opened=${s.opened} errors=${s.errors}`).join("; ") : "?";
      fail(`tag ${tag} (nonce ${nonce}) not shown on the events page after ${opt.timeout}s and ${ctx.hookPosts} POST(s); ` +
        `EventSource(s): ${srcs || "none"}; messages with that tag received by the browser: ${got}`);
    }
    if (Date.now() > nextFire) {
      log("  not shown after 10s: firing the hook again");
      await fire();
      nextFire = Date.now() + 10000;
    }
    await sleep(250);
  }
  log(`  shown: ${row.slice(0, 200)}`);
  return shot(page, "events");
}

async function stepLogout(page) {
  const logoutResp = page.waitForResponse((r) => r.url() === opt.base + "/logout" && r.request().method() === "POST", { timeout: T });
  await gotoMenu(page, "logout", false); // the logout page is left at once for #login
  const lr = await logoutResp.catch(() => fail("SaltGUI made no POST /logout"));
  log(`  POST /logout -> ${lr.status()}`);
  await waitFor("the login page (#page-login current, #username visible, token gone)", () =>
    page.evaluate(() => {
      const cur = document.querySelector(".route.current");
      const u = document.getElementById("username");
      return cur && cur.id === "page-login" && u && u.offsetParent !== null && !sessionStorage.getItem("token");
    }));
  const notice = await page.evaluate(() => (document.getElementById("notice-wrapper") || {}).innerText || "");
  log(`  login page shown again (URL ${page.url().replace(opt.base, "")}, notice "${notice.trim()}")`);
  if (lr.status() !== 200) fail(`POST /logout answered ${lr.status()}`);
  return shot(page, "logged-out");
}

async function stepStats(page) {
  // SaltGUI's hidden options page (CTRL-click on the logo) has a Stats panel: GET /stats every 5s
  const respP = page.waitForResponse((r) => new URL(r.url()).pathname === "/stats", { timeout: T });
  await page.click("#logo", { modifiers: ["Control"] });
  await waitFor("page #page-options to become current", () =>
    page.evaluate(() => location.hash === "#options" && document.getElementById("page-options").classList.contains("current")));
  const r = await respP.catch(() => fail("SaltGUI made no GET /stats on the options page"));
  log(`  GET /stats -> ${r.status()}`);
  if (r.status() !== 200) fail(`GET /stats answered ${r.status()}`);
  const txt = await waitFor("the stats panel to show the /stats answer", () =>
    page.evaluate(() => {
      const p = document.getElementById("stats-panel");
      if (!p) return null;
      if (p.querySelector("#error-row")) throw new Error(`stats panel shows an error: ${p.innerText.slice(0, 300)}`);
      const td = p.querySelector("table tbody td");
      return td && td.innerText.trim() ? td.innerText.replace(/\s+/g, " ").trim() : null;
    }));
  log(`  stats: ${txt.slice(0, 150)}`);
  return shot(page, "stats");
}

// ------------------------------------------------------------------- main

const STEPS = [
  ["a", "login", "open the app and log in", stepLogin],
  ["b", "minions", "minions page lists the minions", stepMinions],
  ["c", "command", "run test.ping on * from the command box", stepCommand],
  ["d", "jobs", "jobs page lists the test.ping job", stepJobs],
  ["e", "keys", "keys page lists the minions as accepted", stepKeys],
  ["f", "events", "events page shows a live hook event", stepEvents],
  ...(opt.withStats ? [["s", "stats", "options page shows GET /stats (--with-stats)", stepStats]] : []),
  ["g", "logout", "log out and see the login page again", stepLogout],
];

async function main() {
  if (!fs.existsSync(opt.chromium)) {
    process.stderr.write(`saltgui: browser ${opt.chromium} not found (run scripts/browser-deps)\n`);
    process.exit(2);
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "saltgui-chromium-"));
  log(`SaltGUI end-to-end against ${opt.base} (user ${opt.user}, eauth ${opt.eauth}); screenshots in ${opt.out}`);
  const ctxOpts = {
    executablePath: opt.chromium,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1400, height: 900 },
    timeout: 60000,
  };
  const context = await chromium.launchPersistentContext(userDataDir, ctxOpts);
  const results = [];
  let failed = null;
  const ctx = {};
  try {
    // observe (not change) the EventSource SaltGUI opens: open/error/messages
    await context.addInitScript(() => {
      const st = { sources: [], messages: [], mark: 0 };
      window.__saltguiTest = st;
      const Orig = window.EventSource;
      if (!Orig) return;
      window.EventSource = class extends Orig {
        constructor(url, init) {
          super(url, init);
          const s = { url: String(url), opened: 0, errors: 0, state: "connecting" };
          st.sources.push(s);
          this.addEventListener("open", () => { s.opened += 1; s.state = "open"; });
          this.addEventListener("error", () => { s.errors += 1; s.state = ["connecting", "open", "closed"][this.readyState]; });
          this.addEventListener("message", (m) => {
            try {
              const ev = JSON.parse(m.data);
              if (st.messages.length < 2000) st.messages.push({ tag: ev.tag, fun: ev.data && ev.data.fun });
            } catch {
              st.messages.push({ tag: "(unparsable)", raw: String(m.data).slice(0, 200) });
            }
          });
          const origClose = this.close.bind(this);
          this.close = () => { s.state = "closed by page"; origClose(); };
        }
      };
    });
    if (opt.saltAuthRoute) {
      await context.route(`${opt.base}/static/salt-auth.txt`, (route) =>
        route.fulfill({ status: 200, contentType: "text/plain", body: `${opt.eauth}\n` }));
    }
    const page = await context.newPage();
    page.on("request", recordRequest);
    page.on("response", recordResponse);
    page.on("requestfailed", recordFailure);
    page.on("requestfinished", recordFinished);
    const consoleErrors = [];
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
    ctx.consoleErrors = consoleErrors;

    for (const [letter, name, title, fn] of STEPS) {
      currentStep = name;
      const seq0 = requests.length;
      const s0 = Date.now();
      const nConsole = consoleErrors.length;
      log(`step ${letter} (${name}): ${title}`);
      try {
        const file = await fn(page, ctx);
        const r = { name, ok: true, seconds: Number(((Date.now() - s0) / 1000).toFixed(2)), screenshot: file ? path.resolve(file) : null };
        results.push(r);
        log(`step ${letter} (${name}): ok in ${r.seconds}s -> ${file}`);
      } catch (e) {
        const msg = (e instanceof StepError ? e.message : (e.stack || String(e)).split("\n").slice(0, 3).join(" | "))
          .replace(/\x1b\[[0-9;]*m/g, "");
        const file = await shot(page, `${name}-FAILED`);
        const d = await pageDiag(page);
        results.push({ name, ok: false, seconds: Number(((Date.now() - s0) / 1000).toFixed(2)), screenshot: file ? path.resolve(file) : null, error: msg });
        failed = { letter, name, msg, d, http: httpProblems(seq0), console: consoleErrors.slice(nConsole) };
        break;
      }
    }
    if (failed) {
      const { letter, name, msg, d, http, console: cons } = failed;
      const lines = [`FAILED step ${letter} (${name}): ${msg}`,
        `  page URL: ${d.url}  current route: ${d.route}  token in session: ${d.token}`];
      if (d.notice) lines.push(`  login notice: ${d.notice}`);
      if (d.warning) lines.push(`  warning bar: ${d.warning}`);
      if (d.popup) lines.push(`  command box: ${d.popup.replace(/\n/g, "\n    ")}`);
      lines.push(`  page shows: ${(d.text || d.error || "").replace(/\n/g, "\n    ")}`);
      if (http.length) lines.push(`  HTTP problems during the step:\n    ${http.join("\n    ")}`);
      const cons2 = cons.filter((c) => !/status of 404/.test(c) || http.some((h) => / -> 404/.test(h)));
      if (cons2.length) lines.push(`  browser console errors during the step:\n    ${cons2.slice(0, 10).join("\n    ")}`);
      process.stderr.write(lines.join("\n") + "\n");
      log(`FAILED step ${letter} (${name}): ${msg}`);
    }
    const left = await settle();
    if (left.length) log(`${left.length} request(s) still without an answer: ${left.map((e) => `${e.method} ${e.path} ${e.body && e.body.fun ? e.body.fun : ""}`).join("; ")}`);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  const rq = await writeRequests();
  log(`${rq.all.length} requests (${rq.deduplicated.length} distinct) written to ${requestsFile}`);
  const summary = {
    ok: !failed && results.length === STEPS.length,
    base: opt.base,
    eauth: opt.eauth,
    eauth_choice: ctx.eauthHow || null,
    seconds: Number(((Date.now() - t0) / 1000).toFixed(2)),
    requests: path.resolve(requestsFile),
    steps: results,
  };
  process.stdout.write(JSON.stringify(summary) + "\n");
  process.exit(summary.ok ? 0 : 1);
}

main().catch((e) => {
  process.stderr.write(`saltgui: ${e.stack || e}\n`);
  process.stdout.write(JSON.stringify({ ok: false, error: String(e.message || e), steps: [] }) + "\n");
  process.exit(1);
});
