// The web page: one image with a before/after preview, or a batch with per-file progress, a log
// and one ZIP (built here, in the browser, by the vendored client-zip). Plain ES modules, no build.
import { downloadZip } from "./vendor/client-zip.js";

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "matting-api-key";
const CONCURRENCY = 2;  // at most the server's args.max_in_flight_per_key (2 by default), or the rest get 429
const touched = new Set();
let singleFile = null;
let singleUrls = [];
const rows = [];
let running = false;

// --- server status and the API key ------------------------------------------------------------
async function loadStatus() {
  try {
    const r = await fetch("/healthz");
    const h = await r.json();
    if (!r.ok) throw new Error(h.error ? h.error.message : r.statusText);
    const [name, m] = Object.entries(h.models)[0];
    $("#server-status").textContent = `${name} · ${m.version} · ${m.device} ${m.precision}` +
      ` · up to ${h.limits.max_upload_mb} MB, ${h.limits.max_megapixels} MP`;
    $("#key-box").hidden = !h.auth;
  } catch (e) {
    $("#server-status").textContent = `server not ready: ${e.message}`;
  }
}
$("#api-key").value = localStorage.getItem(KEY_STORE) || "";
$("#api-key").addEventListener("change", (e) => localStorage.setItem(KEY_STORE, e.target.value.trim()));

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
    else if (input.tagName === "SELECT") input.value = v === undefined ? input.options[0].value : v;
    else input.value = v === undefined ? input.defaultValue : v;
    showValue(input);
  });
  if (!touched.has("background")) {
    const bg = values.background;
    $("#transparent").checked = !bg;
    $("#background").disabled = !bg;
    if (bg) $("#background").value = COLOURS[bg] || (/^#[0-9a-f]{6}$/i.test(bg) ? bg : "#ffffff");
  }
}
$("#preset").addEventListener("change", showPreset);

function showValue(input) {
  const out = document.querySelector(`output[for="${input.id}"]`);
  if (out) out.textContent = input.value;
}
function touch(name, on = true) {
  on ? touched.add(name) : touched.delete(name);
  const el = document.getElementById(name);
  el && el.closest("label")?.classList.toggle("touched", on);
}
document.querySelectorAll("[data-param]").forEach((input) => {
  showValue(input);
  input.addEventListener("input", () => { showValue(input); touch(input.name); });
});
$("#transparent").addEventListener("change", (e) => {
  $("#background").disabled = e.target.checked;
  touch("background", !e.target.checked);
});
$("#background").addEventListener("input", () => touch("background"));
$("#reset").addEventListener("click", () => {
  document.querySelectorAll("[data-param]").forEach((input) => touch(input.name, false));
  touch("background", false);
  $("#preset").value = "";
  showPreset();
});

function paramsForm(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("#preset").value) form.append("preset", $("#preset").value);
  for (const name of touched) {
    if (name === "background") {
      if (!$("#transparent").checked) form.append("background", $("#background").value);
    } else {
      const el = document.getElementById(name);
      form.append(name, el.type === "checkbox" ? String(el.checked) : el.value);
    }
  }
  return form;
}

// --- one request: XHR, because fetch cannot report upload progress ------------------------------
function matte(file, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/matte");
    xhr.responseType = "blob";
    const key = $("#api-key").value.trim();
    if (key) xhr.setRequestHeader("X-Api-Key", key);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress("uploading", e.loaded / e.total);
    xhr.upload.onload = () => onProgress("processing", null);
    xhr.onprogress = (e) => e.lengthComputable && onProgress("downloading", e.loaded / e.total);
    xhr.onerror = () => reject(new Error("network error: is the server running?"));
    xhr.onload = async () => {
      if (xhr.status === 200) {
        resolve({ blob: xhr.response, header: (n) => xhr.getResponseHeader(n) });
        return;
      }
      let message = xhr.statusText;
      try {
        const err = JSON.parse(await xhr.response.text()).error;
        message = `${err.code}: ${err.message}`;
      } catch (_) { /* not our JSON: keep the status text */ }
      reject(new Error(`HTTP ${xhr.status} ${message}`));
    };
    xhr.send(paramsForm(file));
  });
}

function downloadName(result, file) {
  const cd = result.header("Content-Disposition") || "";
  const m = cd.match(/filename="([^"]+)"/);
  return m ? m[1] : file.name.replace(/\.[^.]*$/, "") + ".png";
}

// --- single image ------------------------------------------------------------------------------
async function runSingle(file) {
  singleFile = file;
  $("#single-error").hidden = true;
  $("#single-info").textContent = "processing…";
  $("#rerun").disabled = true;
  const t0 = performance.now();
  try {
    const result = await matte(file);
    singleUrls.forEach(URL.revokeObjectURL);
    const before = URL.createObjectURL(file);
    const after = URL.createObjectURL(result.blob);
    singleUrls = [before, after];
    $("#before-img").src = before;
    $("#result-img").src = after;
    const link = $("#download-link");
    link.href = after;
    link.download = downloadName(result, file);
    const bbox = result.header("X-Subject-Bbox");
    $("#single-info").textContent = `${result.header("X-Width")}×${result.header("X-Height")} px · subject ` +
      `${bbox === "none" ? "not found" : "at " + bbox} · server ${Math.round(result.header("X-Server-Time-Ms"))} ms` +
      ` · round trip ${Math.round(performance.now() - t0)} ms`;
    $("#single-result").hidden = false;
  } catch (e) {
    $("#single-error").textContent = `${file.name}: ${e.message}`;
    $("#single-error").hidden = false;
    $("#single-info").textContent = "";
  } finally {
    $("#rerun").disabled = false;
  }
}
$("#file-input").addEventListener("change", (e) => e.target.files[0] && runSingle(e.target.files[0]));
$("#rerun").addEventListener("click", () => singleFile && runSingle(singleFile));
$("#compare-slider").addEventListener("input", (e) => $("#compare").style.setProperty("--pos", `${e.target.value}%`));

// --- batch -------------------------------------------------------------------------------------
function log(line) {
  const pre = $("#batch-log");
  pre.textContent += `${new Date().toLocaleTimeString()}  ${line}\n`;
  pre.scrollTop = pre.scrollHeight;
}
function kb(n) { return n > 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${Math.ceil(n / 1024)} kB`; }

function addFiles(files) {
  for (const file of files) {
    const tr = document.createElement("tr");
    tr.dataset.status = "queued";
    tr.innerHTML = `<td class="name"></td><td class="size"></td><td><progress max="1" value="0"></progress></td>` +
      `<td class="status">queued</td>`;
    tr.querySelector(".name").textContent = file.name;
    tr.querySelector(".size").textContent = kb(file.size);
    $("#batch-table tbody").append(tr);
    rows.push({ file, tr, status: "queued", blob: null, name: null });
  }
  updateBatch();
}

function setRow(row, status, progress, text) {
  row.status = status;
  row.tr.dataset.status = status;
  const bar = row.tr.querySelector("progress");
  progress === null ? bar.removeAttribute("value") : (bar.value = progress);
  row.tr.querySelector(".status").textContent = text || status;
}

function updateBatch() {
  const done = rows.filter((r) => r.status === "done").length;
  const failed = rows.filter((r) => r.status === "error").length;
  $("#batch-summary").textContent = rows.length
    ? `${rows.length} files · ${done} done · ${failed} failed` : "no files";
  $("#batch-start").disabled = running || !rows.some((r) => r.status === "queued");
  $("#batch-zip").disabled = running || done === 0;
  $("#batch-clear").disabled = running;
}

async function processRow(row) {
  const t0 = performance.now();
  try {
    const result = await matte(row.file, (phase, p) => {
      if (phase === "uploading") setRow(row, "uploading", 0.5 * p, `uploading ${Math.round(100 * p)}%`);
      else if (phase === "processing") setRow(row, "processing", null, "processing");
      else setRow(row, "downloading", 0.5 + 0.5 * p, "downloading");
    });
    row.blob = result.blob;
    row.name = downloadName(result, row.file);
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    setRow(row, "done", 1, `done · ${secs} s`);
    log(`${row.file.name}: ok → ${row.name} (${result.header("X-Width")}×${result.header("X-Height")}, ${secs} s)`);
  } catch (e) {
    setRow(row, "error", 0, e.message);
    log(`${row.file.name}: FAILED ${e.message}`);
  }
  updateBatch();
}

$("#batch-start").addEventListener("click", async () => {
  running = true;
  updateBatch();
  const queue = rows.filter((r) => r.status === "queued");
  log(`processing ${queue.length} file(s), ${CONCURRENCY} at a time`);
  const worker = async () => { for (let row; (row = queue.shift());) await processRow(row); };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  running = false;
  updateBatch();
  log(`finished: ${rows.filter((r) => r.status === "done").length} ok, ` +
      `${rows.filter((r) => r.status === "error").length} failed`);
});

$("#batch-zip").addEventListener("click", async () => {
  const used = new Set();
  const entries = rows.filter((r) => r.status === "done").map((r) => {
    let name = r.name;
    for (let i = 2; used.has(name); i++) name = r.name.replace(/(\.[^.]*)$/, `-${i}$1`);
    used.add(name);
    return { name, input: r.blob };
  });
  entries.push({ name: "matting-log.txt", input: $("#batch-log").textContent });
  const blob = await downloadZip(entries).blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "matting-batch.zip";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  log(`ZIP downloaded: ${entries.length - 1} image(s) and the log`);
});

$("#batch-input").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
$("#batch-clear").addEventListener("click", () => {
  rows.length = 0;
  $("#batch-table tbody").replaceChildren();
  $("#batch-log").textContent = "";
  updateBatch();
});

// --- drag and drop, tabs ------------------------------------------------------------------------
function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...e.dataTransfer.files].filter((f) => f.type.startsWith("image/"));
    if (files.length) onFiles(files);
  });
}
dropZone($("#drop-single"), (files) => runSingle(files[0]));
dropZone($("#drop-batch"), addFiles);

function showTab(name) {
  for (const t of ["single", "batch"]) {
    $(`#tab-${t}`).setAttribute("aria-selected", String(t === name));
    $(`#${t}`).hidden = t !== name;
  }
}
$("#tab-single").addEventListener("click", () => showTab("single"));
$("#tab-batch").addEventListener("click", () => showTab("batch"));

updateBatch();
loadStatus();
loadPresets();
