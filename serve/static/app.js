// The web page: one image (file, drop, paste or URL) with a before/after preview over a live
// background, a history of this session's results, or a batch (files or folders) with per-file
// progress, retries, a log and one ZIP (built here by the vendored client-zip). Plain ES modules,
// no build step, no inline script or style (the page works under a strict Content-Security-Policy).
import { downloadZip } from "./vendor/client-zip.js";
import { STRINGS, applyLanguage, initialLanguage, language, t } from "./i18n.js";

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "matting-api-key";
const CONCURRENCY = 2;  // at most the server's args.max_in_flight_per_key (2 by default), or the rest get 429
const MAX_RETRIES_429 = 5;
const HISTORY_SIZE = 12;
const touched = new Set();
const rows = [];
const history = [];
let single = null; // the history entry shown in the single view
let source = null; // what "Apply parameters" re-sends: {file} or {url}
let running = false;
let serverInfo = null;

// --- server status, the API key and the model picker -------------------------------------------
async function loadStatus() {
  try {
    const r = await fetch("/healthz");
    const h = await r.json();
    if (!r.ok) throw new Error(h.error ? h.error.message : r.statusText);
    serverInfo = h;
    const [name, m] = Object.entries(h.models)[0];
    $("#server-status").removeAttribute("data-i18n");
    $("#server-status").textContent = `${name} · ${m.version} · ${m.device} ${m.precision}` +
      ` · ≤ ${h.limits.max_upload_mb} MB, ${h.limits.max_megapixels} MP`;
    $("#key-box").hidden = !h.auth;
    $("#url-form").hidden = !h.image_url;
    loadModels();
  } catch (e) {
    $("#server-status").textContent = t("notReady", { msg: e.message });
  }
}

function apiKey() { return $("#api-key").value.trim(); }
function keyHeaders() { return apiKey() ? { "X-Api-Key": apiKey() } : {}; }

async function loadModels() {
  if (serverInfo && serverInfo.auth && !apiKey()) { $("#model-box").hidden = true; return; }
  try {
    const r = await fetch("/v1/models", { headers: keyHeaders() });
    if (!r.ok) throw new Error(String(r.status));
    const body = await r.json();
    const select = $("#model");
    const keep = select.value;
    select.replaceChildren(...body.models.map((m) =>
      new Option(`${m.name} · ${m.version} · ${m.device}`, m.name, m.name === body.default, m.name === body.default)));
    if (body.models.some((m) => m.name === keep)) select.value = keep;
    $("#model-box").hidden = false;
  } catch (_) {
    $("#model-box").hidden = true; // no key yet, or a wrong one: the picker comes back with a good key
  }
}
$("#api-key").value = localStorage.getItem(KEY_STORE) || "";
$("#api-key").addEventListener("change", (e) => {
  localStorage.setItem(KEY_STORE, e.target.value.trim());
  loadModels();
});

// --- output formats: the server's table (GET /v1/formats, postproc/formats.py), not a list here ----
// name → {name, extension, media_type, alpha, matte, label}
let formats = {};
// What the page asks the server for when it composes and encodes the download itself: a format with
// transparency, the server's default where it has one (PNG: lossless).
let transport = null;

async function loadFormats() {
  const body = await (await fetch("/v1/formats")).json();
  formats = Object.fromEntries(body.formats.map((f) => [f.name, f]));
  transport = formats[body.default].alpha ? body.default : body.formats.find((f) => f.alpha && !f.matte).name;
  const select = $("#format");
  select.replaceChildren(...body.formats.map((f) => {
    const option = new Option(f.label, f.name, f.name === body.default, f.name === body.default);
    const key = `fmt${f.name[0].toUpperCase()}${f.name.slice(1)}`; // a translated label where there is one
    if (key in STRINGS.en) { option.dataset.i18n = key; option.textContent = t(key); }
    return option;
  }));
  showValue(select);
}
function chosenFormat() { return formats[$("#format").value] || formats[transport]; }
function matteChosen() { return Boolean(chosenFormat() && chosenFormat().matte); }

// --- parameters: only those the user changed are sent, so a preset's values apply to the rest ----
const COLOURS = { white: "#ffffff", black: "#000000" };
let presets = {};

async function loadPresets() {
  presets = await (await fetch("/v1/presets")).json();
  for (const name of Object.keys(presets)) $("#preset").append(new Option(name, name));
}

// What the form shows for a parameter the user has not touched: the preset's value, else the default.
function showPreset() {
  const values = presets[$("#preset").value] || {};
  document.querySelectorAll("[data-param]").forEach((input) => {
    if (touched.has(input.name)) return;
    const v = values[input.name];
    if (input.type === "checkbox") input.checked = v === undefined ? input.defaultChecked : Boolean(v);
    else if (input.tagName === "SELECT") input.value = v === undefined ? (input.options[0]?.value ?? "") : v;
    else input.value = v === undefined ? input.defaultValue : v;
    showValue(input);
  });
  if (!touched.has("background")) {
    const bg = values.background;
    if (bg) $("#background").value = COLOURS[bg] || (/^#[0-9a-f]{6}$/i.test(bg) ? bg : "#ffffff");
    setBackgroundMode(bg ? "color" : "transparent", false);
  }
}
$("#preset").addEventListener("change", showPreset);

function showValue(input) {
  const out = document.querySelector(`output[for="${input.id}"]`);
  if (out) out.textContent = input.value;
}
function touch(name, on = true) {
  on ? touched.add(name) : touched.delete(name);
  const el = name === "background" ? $("#bg-box") : document.getElementById(name);
  el && (el.closest("label") || el).classList.toggle("touched", on);
}
document.querySelectorAll("[data-param]").forEach((input) => {
  showValue(input);
  input.addEventListener("input", () => { showValue(input); touch(input.name); });
});
$("#reset").addEventListener("click", () => {
  document.querySelectorAll("[data-param]").forEach((input) => touch(input.name, false));
  touch("background", false);
  $("#preset").value = "";
  showPreset();
});

// --- the background: transparent, a colour or a picture, previewed live behind the cut-out --------
// The server is asked for a transparent cut-out whenever a background is shown here, so the
// preview changes at once; the download is composed in a canvas with the same background.
const bg = { mode: "transparent", imageUrl: null };

function setBackgroundMode(mode, byUser = true) {
  if (mode === "image" && !bg.imageUrl) mode = "transparent";
  bg.mode = mode;
  document.querySelector(`input[name=bg-mode][value=${mode}]`).checked = true;
  if (byUser) touch("background");
  showBackground();
}
function showBackground() {
  const box = $("#compare");
  box.classList.toggle("checker", bg.mode === "transparent" || !composing());
  box.style.backgroundColor = bg.mode === "color" && composing() ? $("#background").value : "";
  box.style.backgroundImage = bg.mode === "image" && composing() ? `url("${bg.imageUrl}")` : "";
  box.classList.toggle("bg-image", bg.mode === "image" && composing());
}
function composing() { return bg.mode !== "transparent" && !matteChosen(); }

document.querySelectorAll("input[name=bg-mode]").forEach((radio) => radio.addEventListener("change", () => {
  if (radio.value === "image" && !bg.imageUrl) { $("#bg-file").click(); return; }
  setBackgroundMode(radio.value);
}));
$("#background").addEventListener("input", () => setBackgroundMode("color"));
document.querySelectorAll(".swatch").forEach((b) => b.addEventListener("click", () => {
  $("#background").value = b.dataset.color;
  setBackgroundMode("color");
}));
$("#bg-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (!file) return;
  if (bg.imageUrl) URL.revokeObjectURL(bg.imageUrl);
  bg.imageUrl = URL.createObjectURL(file);
  setBackgroundMode("image");
});
$("#format").addEventListener("input", showBackground);

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

// The cut-out over the chosen background, as a file of the chosen format. The server's file is
// kept as it is where nothing is to be composed (a transparent file in the format asked for, or a matte).
async function composed(entry) {
  const format = matteChosen() ? formats[transport] : chosenFormat();
  if (!entry.transparent || (bg.mode === "transparent" && format.name === transport)) {
    return { blob: entry.blob, name: entry.name };
  }
  const url = entry.resultUrl || URL.createObjectURL(entry.blob);
  const fg = await loadImage(url);
  if (!entry.resultUrl) URL.revokeObjectURL(url);
  const canvas = document.createElement("canvas");
  canvas.width = fg.naturalWidth;
  canvas.height = fg.naturalHeight;
  const ctx = canvas.getContext("2d");
  if (bg.mode === "color" || (bg.mode === "transparent" && !format.alpha)) { // no alpha (JPEG): white
    ctx.fillStyle = bg.mode === "color" ? $("#background").value : "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  } else if (bg.mode === "image") {
    const img = await loadImage(bg.imageUrl);
    const s = Math.max(canvas.width / img.naturalWidth, canvas.height / img.naturalHeight); // cover
    const w = img.naturalWidth * s, h = img.naturalHeight * s;
    ctx.drawImage(img, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  }
  ctx.drawImage(fg, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, format.media_type, 0.92));
  return { blob, name: entry.name.replace(/\.[^.]*$/, format.extension) };
}

// The server is asked for a transparent PNG (or a matte): backgrounds and the file format are the
// page's, so a change of background shows at once and costs no request.
function requestFields() {
  const fields = [];
  if ($("#preset").value) fields.push(["preset", $("#preset").value]);
  if (!$("#model-box").hidden && $("#model").value) fields.push(["model", $("#model").value]);
  const mask = matteChosen();
  for (const name of touched) {
    if (name === "background" || name === "format") continue;
    const el = document.getElementById(name);
    fields.push([name, el.type === "checkbox" ? String(el.checked) : el.value]);
  }
  fields.push(...(mask ? [["format", $("#format").value]] : [["background", "transparent"], ["format", transport]]));
  return { fields, transparent: !mask };
}

// --- one request: XHR, because fetch cannot report upload progress ------------------------------
class HttpError extends Error {
  constructor(status, message, retryAfter) { super(message); this.status = status; this.retryAfter = retryAfter; }
}

function send(src, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    let body;
    if (src.file) {
      xhr.open("POST", "/v1/matte");
      body = new FormData();
      body.append("file", src.file, src.file.name);
      for (const [k, v] of fields) body.append(k, v);
    } else { // an image URL: remove.bg's API is the one that fetches URLs
      xhr.open("POST", "/v1.0/removebg");
      xhr.setRequestHeader("Content-Type", "application/json");
      const p = Object.fromEntries(fields);
      body = JSON.stringify({
        image_url: src.url, size: "full", format: transport, channels: formats[p.format].matte ? "alpha" : "rgba",
        crop: p.crop === "true", crop_margin: p.crop_margin ? `${p.crop_margin}px` : undefined,
      });
    }
    xhr.responseType = "blob";
    for (const [k, v] of Object.entries(keyHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress("uploading", e.loaded / e.total);
    xhr.upload.onload = () => onProgress("processing", null);
    xhr.onprogress = (e) => e.lengthComputable && onProgress("downloading", e.loaded / e.total);
    xhr.onerror = () => reject(new HttpError(0, t("network")));
    xhr.onload = async () => {
      if (xhr.status === 200) {
        resolve({ blob: xhr.response, header: (n) => xhr.getResponseHeader(n) });
        return;
      }
      let message = xhr.statusText;
      try {
        const json = JSON.parse(await xhr.response.text());
        const err = json.error || { code: json.errors[0].code, message: json.errors[0].detail || json.errors[0].title };
        message = `${err.code}: ${err.message}`;
      } catch (_) { /* not our JSON: keep the status text */ }
      reject(new HttpError(xhr.status, `HTTP ${xhr.status} ${message}`, Number(xhr.getResponseHeader("Retry-After"))));
    };
    xhr.send(body);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A 429 is answered by waiting as long as the server's Retry-After says, then sending again.
async function matte(src, onProgress = () => {}, onWait = () => {}) {
  const { fields, transparent } = requestFields();
  for (let attempt = 0; ; attempt++) {
    try {
      return { ...(await send(src, fields, onProgress)), transparent };
    } catch (e) {
      if (e.status !== 429 || attempt >= MAX_RETRIES_429) throw e;
      const secs = Math.max(1, e.retryAfter || 1);
      onWait(secs);
      await sleep(secs * 1000);
    }
  }
}

function downloadName(result, name) {
  const cd = result.header("Content-Disposition") || "";
  const m = cd.match(/filename="([^"]+)"/);
  return m ? m[1] : name.replace(/\.[^.]*$/, "") + formats[transport].extension; // remove.bg's: what was asked
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

// --- single image and this session's history --------------------------------------------------
function sourceName(src) {
  if (src.file) return src.file.name || "pasted.png";
  try { return new URL(src.url).pathname.split("/").pop() || "image"; } catch (_) { return "image"; }
}

async function runSingle(src) {
  source = src;
  $("#single-error").hidden = true;
  $("#single-info").textContent = t("processing");
  $("#rerun").disabled = true;
  const t0 = performance.now();
  try {
    const result = await matte(src, () => {}, (s) => { $("#single-info").textContent = t("waiting", { s }); });
    const name = sourceName(src);
    const entry = {
      name: downloadName(result, name), source: src, blob: result.blob, transparent: result.transparent,
      beforeUrl: src.file ? URL.createObjectURL(src.file) : src.url, resultUrl: URL.createObjectURL(result.blob),
      info: infoText(result, performance.now() - t0),
    };
    addHistory(entry);
    show(entry);
  } catch (e) {
    $("#single-error").textContent = `${sourceName(src)}: ${e.message}`;
    $("#single-error").hidden = false;
    $("#single-info").textContent = "";
  } finally {
    $("#rerun").disabled = false;
  }
}

function infoText(result, ms) {
  const bbox = result.header("X-Subject-Bbox");
  const subject = bbox === "none" ? t("subjectNone") : t("subjectAt", { bbox: bbox || "?" });
  return t("info", { w: result.header("X-Width"), h: result.header("X-Height"), subject, ms: Math.round(ms) });
}

function show(entry) {
  single = entry;
  $("#before-img").src = entry.beforeUrl;
  $("#result-img").src = entry.resultUrl;
  $("#download-link").href = entry.resultUrl;
  $("#download-link").download = entry.name;
  $("#single-info").textContent = entry.info;
  $("#single-result").hidden = false;
  showBackground();
  for (const li of $("#history").children) li.classList.toggle("current", li.entry === entry);
}

function addHistory(entry) {
  history.unshift(entry);
  while (history.length > HISTORY_SIZE) {
    const old = history.pop();
    URL.revokeObjectURL(old.resultUrl);
    if (old.source.file) URL.revokeObjectURL(old.beforeUrl);
  }
  const list = $("#history");
  list.replaceChildren(...history.map((h) => {
    const li = document.createElement("li");
    li.entry = h;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "checker";
    button.title = h.name;
    const img = document.createElement("img");
    img.src = h.resultUrl;
    img.alt = h.name;
    const caption = document.createElement("span");
    caption.textContent = h.name;
    button.append(img, caption);
    button.addEventListener("click", () => { source = h.source; show(h); });
    li.append(button);
    return li;
  }));
  $("#history-box").hidden = false;
}

$("#download-link").addEventListener("click", async (e) => {
  if (!single) return;
  e.preventDefault();
  const { blob, name } = await composed(single);
  saveBlob(blob, name);
});
$("#file-input").addEventListener("change", (e) => e.target.files[0] && runSingle({ file: e.target.files[0] }));
$("#rerun").addEventListener("click", () => source && runSingle(source));
$("#compare-slider").addEventListener("input", (e) => $("#compare").style.setProperty("--pos", `${e.target.value}%`));
$("#url-form").addEventListener("submit", (e) => {
  e.preventDefault();
  runSingle({ url: $("#image-url").value.trim() });
});

// Paste an image from the clipboard (a screenshot, an image copied in another program or page).
document.addEventListener("paste", (e) => {
  if (e.target.closest && e.target.closest("input, textarea")) return; // a pasted key or URL is text
  const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (!file) return;
  e.preventDefault();
  showTab("single");
  runSingle({ file });
});

// --- batch -------------------------------------------------------------------------------------
function log(line) {
  const pre = $("#batch-log");
  pre.textContent += `${new Date().toLocaleTimeString()}  ${line}\n`;
  pre.scrollTop = pre.scrollHeight;
}
function kb(n) { return n > 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${Math.ceil(n / 1024)} kB`; }

// files: [{file, dir}], dir being the folder inside a dropped or chosen folder ("" for loose files)
function addFiles(items) {
  for (const { file, dir } of items) {
    const tr = document.createElement("tr");
    tr.dataset.status = "queued";
    tr.innerHTML = `<td class="name"></td><td class="size"></td><td><progress max="1" value="0"></progress></td>` +
      `<td class="status"><span class="text"></span></td>`;
    tr.querySelector(".name").textContent = dir ? `${dir}/${file.name}` : file.name;
    tr.querySelector(".size").textContent = kb(file.size);
    $("#batch-table tbody").append(tr);
    const row = { file, dir, tr, status: "queued", blob: null, name: null, transparent: false };
    rows.push(row);
    setRow(row, "queued", 0, t("queued"));
  }
  updateBatch();
}
const isImage = (f) => f.type.startsWith("image/");

function setRow(row, status, progress, text) {
  row.status = status;
  row.tr.dataset.status = status;
  const bar = row.tr.querySelector("progress");
  progress === null ? bar.removeAttribute("value") : (bar.value = progress);
  row.tr.querySelector(".status .text").textContent = text || status;
  row.tr.querySelector(".status button")?.remove();
  if (status === "error") { // one failed file can be sent again on its own
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "secondary small retry";
    retry.textContent = t("retry");
    retry.addEventListener("click", async () => {
      running = true;
      updateBatch();
      await processRow(row);
      running = false;
      updateBatch();
    });
    row.tr.querySelector(".status").append(retry);
  }
}

function updateBatch() {
  const done = rows.filter((r) => r.status === "done").length;
  const failed = rows.filter((r) => r.status === "error").length;
  $("#batch-summary").textContent = rows.length ? t("summary", { n: rows.length, done, failed }) : t("noFiles");
  $("#batch-start").disabled = running || !rows.some((r) => r.status === "queued");
  $("#batch-zip").disabled = running || done === 0;
  $("#batch-clear").disabled = running;
  rows.forEach((r) => { const b = r.tr.querySelector(".retry"); if (b) b.disabled = running; });
}

async function processRow(row) {
  const t0 = performance.now();
  const label = row.dir ? `${row.dir}/${row.file.name}` : row.file.name;
  try {
    const result = await matte({ file: row.file }, (phase, p) => {
      if (phase === "uploading") setRow(row, "uploading", 0.5 * p, t("uploading", { p: Math.round(100 * p) }));
      else if (phase === "processing") setRow(row, "processing", null, t("processing"));
      else setRow(row, "downloading", 0.5 + 0.5 * p, t("downloading"));
    }, (s) => {
      setRow(row, "waiting", null, t("waiting", { s }));
      log(`${label}: HTTP 429, waiting ${s} s (Retry-After) and retrying`);
    });
    row.blob = result.blob;
    row.transparent = result.transparent;
    row.name = downloadName(result, row.file.name);
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    setRow(row, "done", 1, t("done", { s: secs }));
    log(`${label}: ok → ${row.name} (${result.header("X-Width")}×${result.header("X-Height")}, ${secs} s)`);
  } catch (e) {
    setRow(row, "error", 0, e.message);
    log(`${label}: FAILED ${e.message}`);
  }
  updateBatch();
}

$("#batch-start").addEventListener("click", async () => {
  running = true;
  updateBatch();
  const queue = rows.filter((r) => r.status === "queued");
  log(t("started", { n: queue.length, c: CONCURRENCY }));
  const worker = async () => { for (let row; (row = queue.shift());) await processRow(row); };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  running = false;
  updateBatch();
  log(t("finished", { ok: rows.filter((r) => r.status === "done").length,
    failed: rows.filter((r) => r.status === "error").length }));
});

// The ZIP is named after the local time it was made: matting-YYYYMMDD-HHMMSS.zip.
function zipName(now = new Date()) {
  const p = (n) => String(n).padStart(2, "0");
  return `matting-${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}-` +
    `${p(now.getHours())}${p(now.getMinutes())}${p(now.getSeconds())}.zip`;
}

$("#batch-zip").addEventListener("click", async () => {
  const used = new Set();
  const entries = [];
  for (const r of rows.filter((x) => x.status === "done")) {
    const { blob, name: fileName } = await composed(r);
    const base = r.dir ? `${r.dir}/${fileName}` : fileName;
    let name = base;
    for (let i = 2; used.has(name); i++) name = base.replace(/(\.[^.]*)$/, `-${i}$1`);
    used.add(name);
    entries.push({ name, input: blob });
  }
  entries.push({ name: "matting-log.txt", input: $("#batch-log").textContent });
  saveBlob(await downloadZip(entries).blob(), zipName());
  log(t("zipped", { n: entries.length - 1 }));
});

function relativeDir(file) {
  const path = file.webkitRelativePath || "";
  return path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
}
$("#batch-input").addEventListener("change", (e) => {
  addFiles([...e.target.files].filter(isImage).map((file) => ({ file, dir: "" })));
  e.target.value = "";
});
$("#folder-input").addEventListener("change", (e) => {
  addFiles([...e.target.files].filter(isImage).map((file) => ({ file, dir: relativeDir(file) })));
  e.target.value = "";
});
$("#batch-clear").addEventListener("click", () => {
  rows.length = 0;
  $("#batch-table tbody").replaceChildren();
  $("#batch-log").textContent = "";
  updateBatch();
});

// --- drag and drop (files and whole folders), keyboard, tabs, language -------------------------
async function entryFiles(entry, dir) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return isImage(file) ? [{ file, dir }] : [];
  }
  const reader = entry.createReader();
  const children = [];
  for (let batch; (batch = await new Promise((res, rej) => reader.readEntries(res, rej))).length;) children.push(...batch);
  const sub = dir ? `${dir}/${entry.name}` : entry.name;
  return (await Promise.all(children.map((c) => entryFiles(c, sub)))).flat();
}

async function droppedFiles(dataTransfer) {
  const entries = [...(dataTransfer.items || [])].map((i) => i.kind === "file" && i.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length) return (await Promise.all(entries.map((e) => entryFiles(e, "")))).flat();
  return [...(dataTransfer.files || [])].filter(isImage).map((file) => ({ file, dir: "" }));
}

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = await droppedFiles(e.dataTransfer);
    if (files.length) onFiles(files);
  });
}
dropZone($("#drop-single"), (files) => runSingle({ file: files[0].file }));
dropZone($("#drop-batch"), addFiles);

// Labels that open a file dialog are focusable; Enter or Space opens it.
document.querySelectorAll("label[tabindex='0']").forEach((label) => label.addEventListener("keydown", (e) => {
  if (e.target !== label || (e.key !== "Enter" && e.key !== " ")) return;
  e.preventDefault();
  label.querySelector("input[type=file]").click();
}));

const TABS = ["single", "batch"];
function showTab(name, focus = false) {
  for (const tab of TABS) {
    const button = $(`#tab-${tab}`);
    button.setAttribute("aria-selected", String(tab === name));
    button.tabIndex = tab === name ? 0 : -1;
    $(`#${tab}`).hidden = tab !== name;
  }
  if (focus) $(`#tab-${name}`).focus();
}
for (const tab of TABS) {
  $(`#tab-${tab}`).addEventListener("click", () => showTab(tab));
  $(`#tab-${tab}`).addEventListener("keydown", (e) => { // arrow keys move between tabs (WAI-ARIA tabs)
    const i = TABS.indexOf(tab);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    showTab(TABS[(next + TABS.length) % TABS.length], true);
  });
}

function relabel() { // texts the script wrote in the previous language
  updateBatch();
  for (const row of rows) if (row.status === "queued") setRow(row, "queued", 0, t("queued"));
}
$("#lang").addEventListener("click", () => { applyLanguage(language() === "zh" ? "en" : "zh", true); relabel(); });

applyLanguage(initialLanguage());
updateBatch();
loadStatus();
// A preset may name a format: the picker holds the formats before the presets come.
loadFormats().catch((e) => console.error("GET /v1/formats:", e)).then(loadPresets);
