// The page of `ldlm serve`: builds the controls from /api/info, samples through /api/generate and
// shows every step of the trajectory on a scrubbable timeline. Texts are set with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
let result = null;
let timer = null;

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function field(c) {
  const label = document.createElement("label");
  label.title = c.help;
  const name = document.createElement("span");
  name.textContent = c.label;
  label.appendChild(name);
  let input;
  if (c.choices) {
    input = document.createElement("select");
    for (const v of c.choices) {
      const o = document.createElement("option");
      o.value = o.textContent = v;
      input.appendChild(o);
    }
    input.value = c.default;
  } else if (c.type === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = c.default;
  } else {
    input = document.createElement("input");
    input.type = "number";
    input.min = c.min;
    input.max = c.max;
    input.step = c.type === "int" ? "1" : "any";
    input.value = c.default;
  }
  input.name = c.key;
  input.id = "in-" + c.key;
  input.dataset.type = c.type;
  label.appendChild(input);
  const hint = document.createElement("small");
  hint.textContent = c.choices || c.type === "bool" ? c.help : `${c.min} – ${c.max}`;
  label.appendChild(hint);
  return label;
}

async function init() {
  let info;
  try {
    const r = await fetch("/api/info");
    info = await r.json();
    if (!r.ok) throw new Error(info.error || `server answered ${r.status}`);
  } catch (e) {
    showError(`Cannot reach the model server: ${e.message}`);
    return;
  }
  $("model").textContent = `${info.algo} model ${info.model} · ${info.limits.length} tokens`;
  $("traj-note").textContent = `Each step shows ${info.trajectory}; words that changed since the previous step are marked.`;
  $("limits").textContent = `This server allows at most ${info.limits.max_num} samples and ${info.limits.max_steps} ` +
    `steps per request and runs one request at a time.`;
  for (const c of info.controls) $("fields").appendChild(field(c));
  $("generate").disabled = false;
}

function readForm() {
  const body = {};
  for (const el of $("controls").elements) {
    if (!el.name) continue;
    const raw = el.value.trim();
    if (el.dataset.type === "bool") body[el.name] = el.checked;
    else if (el.dataset.type === "str") body[el.name] = raw;
    else body[el.name] = raw === "" ? null : (Number.isNaN(Number(raw)) ? raw : Number(raw));
  }
  return body;
}

async function generate(ev) {
  ev.preventDefault();
  clearError();
  stop();
  const button = $("generate");
  button.disabled = true;
  $("status").textContent = "Sampling…";
  try {
    const r = await fetch("/api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(readForm())});
    let data;
    try { data = await r.json(); } catch (e) { data = {error: `the server answered ${r.status} without JSON`}; }
    if (!r.ok) {
      showError(data.error || `the server answered ${r.status}`);
      $("status").textContent = result ? "The last successful result is shown below." : "Nothing sampled yet.";
      return;
    }
    result = data;
    render();
  } catch (e) {
    showError(`The request failed: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

function render() {
  const n = result.samples.length, s = result.steps.length;
  const total = result.steps.reduce((a, x) => a + x.ms, 0);
  const shown = Object.entries(result.settings).map(([k, v]) => `${k} ${v}`).join(", ");
  $("status").textContent = `${n} sample${n > 1 ? "s" : ""}, ${s} steps in ${(result.wall_ms / 1000).toFixed(2)} s ` +
    `(steps ${total.toFixed(0)} ms) · ${shown}`;
  const list = $("samples");
  list.replaceChildren(...result.samples.map((t) => {
    const li = document.createElement("li");
    li.textContent = t || "(empty)";
    return li;
  }));
  const slider = $("scrub");
  slider.max = s;
  slider.value = s;
  const bars = $("bars");
  const top = Math.max(...result.steps.map((x) => x.ms), 1e-6);
  bars.replaceChildren(...result.steps.map((x, i) => {
    const b = document.createElement("div");
    b.className = "bar";
    b.style.height = `${Math.max(2, 36 * x.ms / top)}px`;
    b.title = `step ${x.step}: ${x.ms.toFixed(2)} ms`;
    b.addEventListener("click", () => { stop(); slider.value = i + 1; showStep(); });
    return b;
  }));
  $("timeline").hidden = false;
  showStep();
}

// which words of `words` are not in a longest common subsequence with `prev` (i.e. new at this step)
function changed(words, prev) {
  const n = words.length, m = prev.length;
  const L = Array.from({length: n + 1}, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      L[i][j] = words[i] === prev[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = new Array(n).fill(true);
  for (let i = 0, j = 0; i < n && j < m;) {
    if (words[i] === prev[j]) { out[i] = false; i++; j++; }
    else if (L[i + 1][j] >= L[i][j + 1]) i++;
    else j++;
  }
  return out;
}

function marked(text, before) {
  const li = document.createElement("li");
  const words = text.split(" ");
  const isNew = before === null ? words.map(() => false) : changed(words, before.split(" "));
  words.forEach((w, j) => {
    if (j) li.appendChild(document.createTextNode(" "));
    if (isNew[j]) {
      const m = document.createElement("mark");
      m.textContent = w;
      li.appendChild(m);
    } else {
      li.appendChild(document.createTextNode(w));
    }
  });
  if (!text) li.textContent = "(empty)";
  return li;
}

function showStep() {
  const k = Number($("scrub").value) - 1;
  const step = result.steps[k], prev = k > 0 ? result.steps[k - 1] : null;
  const t = step.t === null ? "" : ` · t = ${step.t.toFixed(3)}`;
  $("step-label").textContent = `step ${step.step} / ${result.steps.length}${t} · ${step.ms.toFixed(2)} ms`;
  $("trajectory").replaceChildren(...step.texts.map((x, i) => marked(x, prev ? prev.texts[i] : null)));
  [...$("bars").children].forEach((b, i) => b.classList.toggle("current", i === k));
}

function stop() {
  if (timer !== null) clearInterval(timer);
  timer = null;
  $("play").textContent = "▶";
}

function play() {
  if (timer !== null) return stop();
  const slider = $("scrub");
  if (Number(slider.value) >= result.steps.length) slider.value = 1;
  showStep();
  $("play").textContent = "⏸";
  timer = setInterval(() => {
    if (Number(slider.value) >= result.steps.length) return stop();
    slider.value = Number(slider.value) + 1;
    showStep();
  }, Math.max(40, Math.min(250, 4000 / result.steps.length)));
}

document.addEventListener("DOMContentLoaded", () => {
  $("controls").addEventListener("submit", generate);
  $("scrub").addEventListener("input", () => { stop(); showStep(); });
  $("play").addEventListener("click", play);
  init();
});
