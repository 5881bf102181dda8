// The self-classifying MNIST cellular automaton (Randazzo et al., Distill 2020) in the browser.
//
// The same math as nca.model.step: state (H, W, 20) float32, channels [grey | 9 hidden | 10 class];
// perceive = 3x3 conv over all 20 channels (SAME zero padding, HWIO kernel [3,3,20,80]) + bias,
// ReLU; then 80 -> 80 + ReLU; then 80 -> 19; the update plus N(0, noise_std) is added to the 19
// mutable channels of cells that fire (one uniform draw per cell, <= fire_rate) and are alive
// (grey > 0.1). Grey never changes; dead cells stay 0 and stay visible to their neighbours; a
// cell's label is the argmax of its 10 class channels (ties to the lowest). Only alive cells
// that fire are computed: no other cell changes.
//
// Adversaries (Adversarial Reprogramming of NCA, Distill 2021; when adversary.json is served):
// a fixed mask marks cells that apply the adversary's rule instead of the model's, as in
// nca.selforg_mnist.adversarial.mixed_step (same state, fire mask and noise; the model's fire
// rate and noise). The mask belongs to grid positions, alive or not; removing it leaves the
// states, which then follow the model. Votes shown (legend, majority) leave adversarial cells out.
//
// Test API (window.ncaDemo): ready, error, setGrey(flat, h, w), stepWith(fireMask, noise),
// step(), getState(), labels(), majorityLabel(), gridSize(), setRunning(bool), stepCount(),
// hasAdversary(), setAdversaries(flatMask), adversaryMask(), scatterAdversaries(fraction),
// removeAdversaries().
"use strict";

(function () {
  const H = 56;
  const W = 56;
  const C = 20; // channels
  const M = 19; // mutable channels
  const F = 80; // perception filters
  const NC = 10; // classes
  const ALIVE = 0.1;
  const SCALE = 8; // canvas pixels per cell
  const LAYERS = [
    ["perceive/kernel", [3, 3, C, F]],
    ["perceive/bias", [F]],
    ["hidden/kernel", [F, F]],
    ["hidden/bias", [F]],
    ["output/kernel", [F, M]],
    ["output/bias", [M]],
  ];
  const PALETTES = {
    // The article's palette.
    article: [
      [128, 0, 0], [230, 25, 75], [70, 240, 240], [210, 245, 60], [250, 190, 190],
      [170, 110, 40], [170, 255, 195], [165, 163, 159], [0, 128, 128], [128, 128, 0],
    ],
    // Okabe-Ito's 8 colour-blind-safe colours, plus grey and Paul Tol's wine.
    colorblind: [
      [0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66],
      [0, 114, 178], [213, 94, 0], [204, 121, 167], [153, 153, 153], [136, 34, 85],
    ],
  };

  const state = new Float32Array(H * W * C);
  let params = null; // {pk, pb, hk, hb, ok, ob, fireRate, noiseStd}
  let adversary = null; // the adversary's params (same form), or null
  const adversarial = new Uint8Array(H * W); // 1: the cell follows the adversary's rule
  let digits = null; // {images: [Uint8Array(784)], labels: [int]}
  let palette = PALETTES.article;
  let running = true;
  let stepsPerSecond = 30;
  let steps = 0;
  let dirty = true;
  let measured = { since: 0, steps: 0, rate: 0 };

  const api = {
    ready: false,
    error: null,
    gridSize: () => [H, W],
    setGrey: (flat, h, w) => {
      setGrey(flat, h, w);
      const info = document.getElementById("digit-info");
      if (info) info.textContent = "";
    },
    stepWith,
    step: () => stepWith(null, null),
    getState: () => new Float32Array(state),
    labels,
    majorityLabel,
    setRunning: (on) => {
      running = !!on;
      updatePlayButton();
    },
    stepCount: () => steps,
    hasAdversary: () => adversary !== null,
    setAdversaries: (flat) => {
      needAdversary();
      if (flat.length !== H * W) {
        throw new Error(`setAdversaries: ${flat.length} values; the grid needs ${H * W}`);
      }
      for (let i = 0; i < H * W; i++) adversarial[i] = flat[i] ? 1 : 0;
      dirty = true;
    },
    adversaryMask: () => Array.from(adversarial),
    scatterAdversaries: (fraction) => {
      needAdversary();
      scatterAdversaries(fraction);
    },
    removeAdversaries,
  };
  window.ncaDemo = api;

  // ---- the CA ------------------------------------------------------------------------------

  function isAlive(i) {
    return state[i * C] > ALIVE;
  }

  function gaussian() {
    // Box-Muller; 1 - random() is in (0, 1], so the log is finite.
    const u = 1 - Math.random();
    const v = Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  // One step. fireMask: H*W booleans (or null: draw with fire_rate); noise: H*W*19 floats (or
  // null: draw N(0, noise_std)). All updates are computed from the old state, then applied.
  function stepWith(fireMask, noise) {
    if (!params) throw new Error("the model is not loaded");
    if (fireMask && fireMask.length !== H * W) {
      throw new Error(`fireMask has ${fireMask.length} values; the grid needs ${H * W}`);
    }
    if (noise && noise.length !== H * W * M) {
      throw new Error(`noise has ${noise.length} values; the grid needs ${H * W * M}`);
    }
    const { fireRate, noiseStd } = params;
    const cells = [];
    for (let i = 0; i < H * W; i++) {
      if (!isAlive(i)) continue;
      const fires = fireMask ? !!fireMask[i] : Math.random() <= fireRate;
      if (fires) cells.push(i);
    }
    const ds = new Float32Array(cells.length * M);
    const p = new Float64Array(F);
    const h = new Float64Array(F);
    const o = new Float64Array(M);
    for (let k = 0; k < cells.length; k++) {
      const i = cells[k];
      const { pk, pb, hk, hb, ok, ob } = adversary && adversarial[i] ? adversary : params;
      const y = (i / W) | 0;
      const x = i - y * W;
      p.set(pb);
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= H) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= W) continue;
          const base = (yy * W + xx) * C;
          const kbase = ((dy + 1) * 3 + (dx + 1)) * C * F;
          for (let c = 0; c < C; c++) {
            const v = state[base + c];
            if (v === 0) continue;
            const off = kbase + c * F;
            for (let f = 0; f < F; f++) p[f] += v * pk[off + f];
          }
        }
      }
      h.set(hb);
      for (let a = 0; a < F; a++) {
        const v = p[a];
        if (v <= 0) continue; // ReLU
        const off = a * F;
        for (let b = 0; b < F; b++) h[b] += v * hk[off + b];
      }
      o.set(ob);
      for (let a = 0; a < F; a++) {
        const v = h[a];
        if (v <= 0) continue; // ReLU
        const off = a * M;
        for (let m = 0; m < M; m++) o[m] += v * ok[off + m];
      }
      for (let m = 0; m < M; m++) {
        const n = noise ? noise[i * M + m] : noiseStd ? noiseStd * gaussian() : 0;
        ds[k * M + m] = o[m] + n;
      }
    }
    for (let k = 0; k < cells.length; k++) {
      const base = cells[k] * C + 1;
      for (let m = 0; m < M; m++) state[base + m] += ds[k * M + m];
    }
    steps++;
    measured.steps++;
    dirty = true;
  }

  function needAdversary() {
    if (!adversary) throw new Error("no adversary.json was served: there is no second rule");
  }

  // Marks each grid cell adversarial with probability `fraction` (the attack's mask).
  function scatterAdversaries(fraction) {
    for (let i = 0; i < H * W; i++) if (Math.random() < fraction) adversarial[i] = 1;
    dirty = true;
  }

  function removeAdversaries() {
    adversarial.fill(0);
    dirty = true;
  }

  function numAdversarial() {
    let n = 0;
    for (let i = 0; i < H * W; i++) if (adversarial[i] && isAlive(i)) n++;
    return n;
  }

  // Sets the grey of cell i with mutation semantics (nca.model.mutate): the state survives only
  // where the cell stays alive; dead cells hold 0, so newly alive cells start at 0.
  function setCellGrey(i, g) {
    state[i * C] = g;
    if (!(g > ALIVE)) state.fill(0, i * C + 1, (i + 1) * C);
  }

  // Replaces the drawing by a flat h*w grey image in [0, 1], centred if smaller than the grid.
  function setGrey(flat, h, w) {
    h = h === undefined ? H : h;
    w = w === undefined ? W : w;
    if (!(h >= 1 && w >= 1 && h <= H && w <= W) || flat.length !== h * w) {
      throw new Error(`setGrey: ${flat.length} values for ${h}x${w}; at most ${H}x${W}`);
    }
    const top = Math.floor((H - h) / 2);
    const left = Math.floor((W - w) / 2);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const yy = y - top;
        const xx = x - left;
        const inside = yy >= 0 && yy < h && xx >= 0 && xx < w;
        const g = inside ? Number(flat[yy * w + xx]) : 0;
        setCellGrey(y * W + x, Number.isFinite(g) ? Math.min(1, Math.max(0, g)) : 0);
      }
    }
    steps = 0; // a new drawing: count its steps
    dirty = true;
  }

  function labelOf(i) {
    const base = i * C + C - NC;
    let best = 0;
    for (let c = 1; c < NC; c++) if (state[base + c] > state[base + best]) best = c;
    return best;
  }

  // Every cell's label, -1 for dead cells.
  function labels() {
    const out = new Array(H * W);
    for (let i = 0; i < H * W; i++) out[i] = isAlive(i) ? labelOf(i) : -1;
    return out;
  }

  // Votes of the alive cells that follow the model (adversarial cells are left out).
  function labelCounts() {
    const counts = new Array(NC).fill(0);
    for (let i = 0; i < H * W; i++) if (isAlive(i) && !adversarial[i]) counts[labelOf(i)]++;
    return counts;
  }

  // The label most of the model's alive cells vote for (ties to the lowest), -1 if none.
  function majorityLabel() {
    const counts = labelCounts();
    let best = 0;
    for (let c = 1; c < NC; c++) if (counts[c] > counts[best]) best = c;
    return counts[best] > 0 ? best : -1;
  }

  // ---- params and digits -------------------------------------------------------------------

  function parseParams(text, file = "params.json") {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new Error(`${file} is not valid JSON (${e.message})`);
    }
    if (!doc || typeof doc !== "object" || !Array.isArray(doc.layers)) {
      throw new Error(`${file} has no list of layers`);
    }
    const byName = {};
    for (const layer of doc.layers) {
      if (layer && typeof layer.name === "string") byName[layer.name] = layer;
    }
    const arrays = {};
    for (const [name, shape] of LAYERS) {
      const layer = byName[name];
      if (!layer) throw new Error(`${file} has no layer "${name}"`);
      if (!Array.isArray(layer.shape) || layer.shape.join(",") !== shape.join(",")) {
        throw new Error(`${file} layer "${name}" has shape [${layer.shape}]; ` +
                        `the CA needs [${shape}]`);
      }
      const size = shape.reduce((a, b) => a * b, 1);
      if (!Array.isArray(layer.data) || layer.data.length !== size) {
        throw new Error(`${file} layer "${name}" has ` +
                        `${Array.isArray(layer.data) ? layer.data.length : "no"} values; ` +
                        `its shape [${shape}] needs ${size}`);
      }
      for (const v of layer.data) {
        if (typeof v !== "number" || !Number.isFinite(v)) {
          throw new Error(`${file} layer "${name}" holds a non-number (${v})`);
        }
      }
      arrays[name] = Float32Array.from(layer.data);
    }
    const fireRate = doc.fire_rate;
    const noiseStd = doc.noise_std;
    if (typeof fireRate !== "number" || !(fireRate > 0 && fireRate <= 1)) {
      throw new Error(`${file} fire_rate (${fireRate}) must be a number in (0, 1]`);
    }
    if (typeof noiseStd !== "number" || !(noiseStd >= 0 && Number.isFinite(noiseStd))) {
      throw new Error(`${file} noise_std (${noiseStd}) must be a number >= 0`);
    }
    return {
      pk: arrays["perceive/kernel"], pb: arrays["perceive/bias"],
      hk: arrays["hidden/kernel"], hb: arrays["hidden/bias"],
      ok: arrays["output/kernel"], ob: arrays["output/bias"],
      fireRate, noiseStd, model: String(doc.model || "model"),
    };
  }

  function parseDigits(doc) {
    const n = doc && Array.isArray(doc.images) ? doc.images.length : 0;
    if (!n || doc.height !== 28 || doc.width !== 28 || !Array.isArray(doc.labels) ||
        doc.labels.length !== n || doc.images.some((im) => !Array.isArray(im) || im.length !== 784)) {
      throw new Error("digits.json is malformed");
    }
    return { images: doc.images.map((im) => Uint8Array.from(im)), labels: doc.labels };
  }

  // ---- drawing, rendering, controls -------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  let canvas, ctx, cellCanvas, cellCtx, cellImage;
  let brush = 1.5;
  let mode = "draw";
  let last = null; // last pointer position in cells, while a pointer is down
  let strokeMode = "draw";

  // kind: "draw", "erase", "adversary" (mark cells as adversarial) or "unmark".
  function paint(cx, cy, kind) {
    const r = brush;
    const y0 = Math.max(0, Math.floor(cy - r - 1));
    const y1 = Math.min(H - 1, Math.ceil(cy + r + 1));
    const x0 = Math.max(0, Math.floor(cx - r - 1));
    const x1 = Math.min(W - 1, Math.ceil(cx + r + 1));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        const v = Math.min(1, Math.max(0, r + 0.5 - d)); // anti-aliased edge, like MNIST's
        if (v <= 0) continue;
        const i = y * W + x;
        const g = state[i * C];
        if (kind === "adversary" || kind === "unmark") {
          if (v >= 0.5) adversarial[i] = kind === "adversary" ? 1 : 0;
        } else {
          setCellGrey(i, kind === "erase" ? Math.min(g, 1 - v) : Math.max(g, v));
        }
      }
    }
    dirty = true;
  }

  function strokeTo(pos) {
    if (!last) {
      paint(pos[0], pos[1], strokeMode);
    } else {
      const n = Math.max(1, Math.ceil(Math.hypot(pos[0] - last[0], pos[1] - last[1]) * 2));
      for (let s = 1; s <= n; s++) {
        const t = s / n;
        paint(last[0] + t * (pos[0] - last[0]), last[1] + t * (pos[1] - last[1]), strokeMode);
      }
    }
    last = pos;
  }

  function cellPos(event) {
    const rect = canvas.getBoundingClientRect();
    return [((event.clientX - rect.left) / rect.width) * W,
            ((event.clientY - rect.top) / rect.height) * H];
  }

  function render() {
    const px = cellImage.data;
    for (let i = 0; i < H * W; i++) {
      const rgb = isAlive(i) ? palette[labelOf(i)] : [255, 255, 255];
      px[4 * i] = rgb[0];
      px[4 * i + 1] = rgb[1];
      px[4 * i + 2] = rgb[2];
      px[4 * i + 3] = 255;
    }
    cellCtx.putImageData(cellImage, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(cellCanvas, 0, 0, canvas.width, canvas.height);
    // A guide: MNIST's 28x28, where random digits go and the model's training digits lived.
    ctx.save();
    ctx.strokeStyle = "rgba(0, 0, 0, 0.25)";
    ctx.setLineDash([6, 6]);
    ctx.strokeRect(Math.floor((W - 28) / 2) * SCALE + 0.5, Math.floor((H - 28) / 2) * SCALE + 0.5,
                   28 * SCALE - 1, 28 * SCALE - 1);
    ctx.restore();
    outlineAdversaries();
    renderLegend();
    const adversaries = numAdversarial();
    const alive = labelCounts().reduce((a, b) => a + b, 0) + adversaries;
    $("status").textContent =
      `step ${steps} \u00b7 ${alive} alive cells` +
      (adversaries ? ` (${adversaries} adversarial, not counted in the votes)` : "") +
      (measured.rate ? ` \u00b7 ${measured.rate.toFixed(0)} steps/s` : "");
    dirty = false;
  }

  // Adversarial cells: a solid black outline where alive, a faint dashed one where dead (they
  // act once a drawing makes them alive).
  function outlineAdversaries() {
    ctx.save();
    for (const alive of [false, true]) {
      ctx.beginPath();
      for (let i = 0; i < H * W; i++) {
        if (!adversarial[i] || isAlive(i) !== alive) continue;
        const y = (i / W) | 0;
        ctx.rect((i - y * W) * SCALE + 1, y * SCALE + 1, SCALE - 2, SCALE - 2);
      }
      ctx.lineWidth = alive ? 2 : 1;
      ctx.strokeStyle = alive ? "#000" : "rgba(0, 0, 0, 0.3)";
      ctx.setLineDash(alive ? [] : [2, 2]);
      ctx.stroke();
    }
    ctx.restore();
  }

  function buildLegend() {
    const legend = $("legend");
    legend.textContent = "";
    for (let c = 0; c < NC; c++) {
      const row = document.createElement("div");
      row.className = "legend-row";
      row.id = `legend-${c}`;
      row.innerHTML = `<span class="swatch"></span><span class="digit">${c}</span>` +
        `<span class="bar"><span class="fill"></span></span><span class="share">0%</span>`;
      legend.appendChild(row);
    }
  }

  function renderLegend() {
    const counts = labelCounts();
    const total = counts.reduce((a, b) => a + b, 0);
    const top = majorityLabel();
    for (let c = 0; c < NC; c++) {
      const row = $(`legend-${c}`);
      const share = total ? counts[c] / total : 0;
      const colour = `rgb(${palette[c].join(",")})`;
      row.querySelector(".swatch").style.background = colour;
      row.querySelector(".fill").style.background = colour;
      row.querySelector(".fill").style.width = `${(100 * share).toFixed(1)}%`;
      row.querySelector(".share").textContent = `${(100 * share).toFixed(0)}%`;
      row.classList.toggle("top", c === top);
    }
  }

  function updatePlayButton() {
    const button = $("play");
    if (button) button.textContent = running ? "Pause" : "Play";
  }

  function randomDigit() {
    if (!digits) return;
    const k = Math.floor(Math.random() * digits.images.length);
    setGrey(Array.from(digits.images[k], (v) => v / 255), 28, 28);
    $("digit-info").textContent = `test digit, true label ${digits.labels[k]}`;
  }

  function setupControls() {
    canvas.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 && e.button !== 2) return;
      e.preventDefault();
      canvas.setPointerCapture(e.pointerId);
      // The right button undoes the pen: erases grey, or unmarks adversaries.
      strokeMode = e.button !== 2 ? mode : mode === "adversary" ? "unmark" : "erase";
      last = null;
      strokeTo(cellPos(e));
      if (mode !== "adversary") $("digit-info").textContent = "your drawing";
    });
    canvas.addEventListener("pointermove", (e) => {
      if (last) strokeTo(cellPos(e));
    });
    const end = () => {
      last = null;
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    for (const input of document.querySelectorAll("input[name=mode]")) {
      input.addEventListener("change", () => {
        mode = input.value;
      });
    }
    $("brush").addEventListener("input", () => {
      brush = Number($("brush").value);
      $("brush-value").textContent = brush;
    });
    $("speed").addEventListener("input", () => {
      stepsPerSecond = Number($("speed").value);
      $("speed-value").textContent = stepsPerSecond;
    });
    $("play").addEventListener("click", () => api.setRunning(!running));
    $("step").addEventListener("click", () => {
      api.setRunning(false);
      api.step();
    });
    $("clear").addEventListener("click", () => {
      setGrey(new Float32Array(H * W), H, W);
      $("digit-info").textContent = "";
    });
    $("random").addEventListener("click", randomDigit);
    $("scatter").addEventListener("click", () => scatterAdversaries(0.1));
    $("remove").addEventListener("click", removeAdversaries);
    $("palette").addEventListener("change", () => {
      palette = PALETTES[$("palette").value] || PALETTES.article;
      dirty = true;
    });
  }

  let previous = null;
  let backlog = 0;
  function frame(now) {
    if (previous === null) previous = now;
    const dt = Math.min(0.25, (now - previous) / 1000);
    previous = now;
    if (running && api.ready) {
      backlog += dt * stepsPerSecond;
      const start = performance.now();
      while (backlog >= 1 && performance.now() - start < 40) {
        api.step();
        backlog -= 1;
      }
      backlog = Math.min(backlog, 1); // too slow for the speed asked: drop the rest
    } else {
      backlog = 0;
    }
    if (now - measured.since > 1000) {
      measured.rate = running ? (1000 * measured.steps) / (now - measured.since) : 0;
      measured.since = now;
      measured.steps = 0;
      dirty = true;
    }
    if (dirty) render();
    requestAnimationFrame(frame);
  }

  function showError(message) {
    api.error = message;
    api.ready = false;
    const box = $("error");
    box.textContent = `The demo could not start: ${message}`;
    box.hidden = false;
    for (const el of document.querySelectorAll("#controls button, #controls input")) {
      el.disabled = true;
    }
  }

  async function start() {
    canvas = $("grid");
    canvas.width = W * SCALE;
    canvas.height = H * SCALE;
    ctx = canvas.getContext("2d");
    cellCanvas = document.createElement("canvas");
    cellCanvas.width = W;
    cellCanvas.height = H;
    cellCtx = cellCanvas.getContext("2d");
    cellImage = cellCtx.createImageData(W, H);
    buildLegend();
    setupControls();
    try {
      const response = await fetch("params.json", { cache: "no-store" });
      if (!response.ok) throw new Error(`params.json: HTTP ${response.status}`);
      params = parseParams(await response.text());
    } catch (e) {
      showError(e.message || String(e));
      render();
      return;
    }
    $("model").textContent = `${params.model} \u00b7 fire rate ${params.fireRate}, ` +
                             `noise ${params.noiseStd}`;
    try {
      const response = await fetch("digits.json", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      digits = parseDigits(await response.json());
    } catch (e) {
      digits = null;
      $("random").disabled = true;
      $("random").title = "no MNIST digits were exported with this demo";
    }
    if (digits) randomDigit();
    try {
      const response = await fetch("adversary.json", { cache: "no-store" });
      if (response.status === 404) {
        adversary = null;
      } else if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      } else {
        adversary = parseParams(await response.text(), "adversary.json");
      }
    } catch (e) {
      showError(e.message || String(e));
      render();
      return;
    }
    for (const el of document.querySelectorAll(".needs-adversary")) {
      el.disabled = !adversary;
      el.title = adversary ? `the adversary: ${adversary.model}` : "no adversary.json was served";
    }
    api.ready = true;
    render();
    requestAnimationFrame(frame);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
