// kdskin serve page: plain JavaScript, no framework, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let current = null;   // the File shown now
let generation = 0;   // answers for an older file are dropped

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function call(url, form) {
  let response;
  try {
    response = await fetch(url, {method: form ? "POST" : "GET", body: form});
  } catch (err) {
    throw new Error("the kdskin server cannot be reached (" + err.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.status + " " + response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

function png(b64) { return "data:image/png;base64," + b64; }
function pct(p) { return (100 * p).toFixed(1) + "%"; }

async function loadInfo() {
  try {
    info = await call("/info");
  } catch (err) {
    showError(err.message);
    return;
  }
  $("notice").textContent = info.notice;
  $("model").textContent = "Model: " + info.model + " (" + info.input_size + " px input; "
    + "uploads up to " + info.max_upload_mb.toFixed(0) + " MiB)";
  const select = $("cam-method");
  select.innerHTML = "";
  for (const m of info.methods.filter((m) => m !== "lime")) {
    const option = document.createElement("option");
    option.value = m;
    option.textContent = info.method_titles[m];
    select.appendChild(option);
  }
  if (!select.options.length) {
    select.hidden = true;
    $("cam-caption").textContent = info.cam_unavailable || "no CAM for this model";
  }
}

function renderPrediction(p) {
  $("file-name").textContent = p.image;
  const list = $("classes");
  list.innerHTML = "";
  p.top.forEach((t, i) => {
    const li = document.createElement("li");
    li.className = i === 0 ? "top" : "";
    li.dataset.class = t.class;
    li.innerHTML = '<span class="name"></span><span class="bar"><span class="fill"></span>'
      + '</span><span class="value"></span>';
    li.querySelector(".name").textContent = t.class;
    li.querySelector(".fill").style.width = pct(t.probability);
    li.querySelector(".value").textContent = pct(t.probability);
    list.appendChild(li);
  });
  const ref = $("referral");
  if (p.refer === null) {
    ref.className = "decision none";
    ref.textContent = "Referral: no operating point with this model.";
  } else {
    ref.className = "decision " + (p.refer ? "refer" : "ok");
    ref.textContent = (p.refer ? "REFER" : "No referral") + ": malignant probability "
      + p.malignant_probability.toFixed(3) + (p.refer ? " \u2265 " : " < ")
      + "threshold " + p.referral_threshold.toFixed(3) + " (mel + bcc + akiec).";
  }
  const oos = $("oos");
  if (p.out_of_scope === null) {
    oos.className = "decision none";
    oos.textContent = "Out-of-scope check: no threshold with this model.";
  } else if (p.out_of_scope) {
    oos.className = "decision warn";
    oos.textContent = "WARNING: this image is outside what the model was trained on (not a "
      + "dermoscopic lesion image like its training data?); the classes above are unreliable.";
  } else {
    oos.className = "decision ok";
    oos.textContent = "In scope: the image resembles the training data (score "
      + p.in_scope_score.toFixed(3) + ").";
  }
  $("calibration").textContent = p.calibrated ? "Probabilities calibrated (temperature scaling "
    + "fitted on the validation split)." : "Probabilities as the model gives them.";
  $("input-img").src = png(p.input_png);
  $("input-caption").textContent = "model input (" + info.input_size + " \u00d7 "
    + info.input_size + " px)";
}

function explainForm(file, method) {
  const form = new FormData();
  form.append("file", file);
  form.append("method", method);
  return form;
}

async function runCam(file, gen) {
  const select = $("cam-method");
  if (select.hidden || !select.value) return;
  const img = $("cam-img");
  img.hidden = true;
  $("cam-progress").hidden = false;
  $("cam-caption").textContent = "";
  try {
    const r = await call("/explain", explainForm(file, select.value));
    if (gen !== generation) return;
    img.src = png(r.overlay_png);
    img.hidden = false;
    $("cam-caption").textContent = r.title + " for " + r.class + " (Keras student, "
      + r.seconds.toFixed(1) + " s)";
  } catch (err) {
    if (gen === generation) $("cam-caption").textContent = err.message;
  } finally {
    if (gen === generation) $("cam-progress").hidden = true;
  }
}

async function runLime(file, gen) {
  if (!info.methods.includes("lime")) return;
  const img = $("lime-img");
  img.hidden = true;
  $("lime-progress").hidden = false;
  $("lime-caption").textContent = "LIME (" + info.lime_samples + " samples on the deployed file)";
  const start = performance.now();
  const timer = setInterval(() => {
    $("lime-elapsed").textContent = "LIME running: "
      + ((performance.now() - start) / 1000).toFixed(0) + " s";
  }, 250);
  try {
    const r = await call("/explain", explainForm(file, "lime"));
    if (gen !== generation) return;
    img.src = png(r.overlay_png);
    img.hidden = false;
    $("lime-caption").textContent = "LIME for " + r.class + " (deployed file, "
      + r.seconds.toFixed(1) + " s)";
  } catch (err) {
    if (gen === generation) $("lime-caption").textContent = err.message;
  } finally {
    clearInterval(timer);
    if (gen === generation) $("lime-progress").hidden = true;
  }
}

async function analyse(file) {
  if (!file) return;
  const gen = ++generation;
  current = file;
  showError("");
  $("result").hidden = true;
  if (info && file.size > info.max_upload_mb * 1048576) {
    showError(file.name + ": " + (file.size / 1048576).toFixed(1) + " MiB is more than the "
      + "upload limit of " + info.max_upload_mb.toFixed(0) + " MiB; choose a smaller image.");
    return;
  }
  const form = new FormData();
  form.append("file", file);
  let p;
  try {
    p = await call("/predict?top=7&image=true", form);
  } catch (err) {
    if (gen === generation) showError(err.message);
    return;
  }
  if (gen !== generation) return;
  renderPrediction(p);
  $("result").hidden = false;
  runCam(file, gen);
  runLime(file, gen);
}

$("file").addEventListener("change", (e) => analyse(e.target.files[0]));
$("cam-method").addEventListener("change", () => { if (current) runCam(current, generation); });
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => analyse(e.dataTransfer.files[0]));
loadInfo();
