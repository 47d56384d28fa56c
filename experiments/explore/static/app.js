// The explorer's page: draws the latent planes from /api/info and shows, live, what each model
// decodes under the pointer (/api/decode). Plain JavaScript and 2-D canvases, nothing fetched from
// elsewhere. window.explorer exposes the state that the tests and the benchmark read.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]; // matplotlib's tab10, as the figures
const IMAGE = 28; // decoded images are IMAGE x IMAGE pixels

const explorer = {
  ready: false,
  info: null,
  planes: {}, // model name -> Plane
  stats: {}, // model name -> [{moved, drawn}] (performance.now() of the pointer move and of the drawing)
  moves: {}, // model name -> pointer moves seen
  sample: null, // the last /api/sample answer
  digit: 0, // the conditional VAE's picked digit
  pointerType: null, // of the last pointer event on a plane
  settled(name) { return this.planes[name].decoder.settled(); },
  shown(name) { return this.planes[name].decoder.shown; },
};
window.explorer = explorer;

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${url}: HTTP ${response.status}`);
  return body;
}

// Asks the server for the image at the newest position only: at most one request in flight, and a
// position that a newer one replaced before its turn is never sent (the newest position wins).
class LiveDecoder {
  constructor(name, urlFor, draw) {
    this.name = name;
    this.urlFor = urlFor;
    this.draw = draw;
    this.next = null; // {z, text, moved}: the position waiting for its turn
    this.busy = false;
    this.shown = null; // {z, text, moved}: the position whose image is on the page
    this.wanted = null; // the newest position asked for
  }

  want(z, moved) {
    const text = z.map((v) => String(Number(v.toPrecision(7)))).join(",");
    this.next = this.wanted = { z, text, moved };
    if (!this.busy) this.pump();
  }

  settled() { return !this.busy && this.next === null && this.shown === this.wanted; }

  async pump() {
    this.busy = true;
    while (this.next !== null) {
      const job = this.next;
      this.next = null;
      try {
        const response = await fetch(this.urlFor(job.text), { cache: "no-store" });
        if (!response.ok) throw new Error((await response.json()).error);
        const bitmap = await createImageBitmap(await response.blob());
        this.draw(bitmap, job);
        this.shown = job;
        explorer.stats[this.name].push({ moved: job.moved, drawn: performance.now() });
      } catch (err) {
        setStatus(`${this.name}: ${err.message}`, true);
        this.shown = job; // settled all the same: the error is on the page
      }
    }
    this.busy = false;
  }
}

// Round numbers for the axes: about `count` steps of 1, 2 or 5 times a power of ten.
function ticks(lo, hi, count = 5) {
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const values = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) values.push(Math.abs(v) < step / 1e6 ? 0 : v);
  return values;
}

// One model's latent plane (its first two dimensions; any others are held at 0): the test codes
// coloured by class, the prior's circles, the AE's code box, the pointer and the prior draws.
class Plane {
  constructor(name, root, spec, draw) {
    this.name = name;
    this.root = root;
    this.spec = spec;
    this.base = root.querySelector("canvas.base");
    this.overlay = root.querySelector("canvas.overlay");
    this.coords = document.querySelector(`output.coords[data-model="${name}"]`);
    this.pointer = [0, 0];
    this.marks = []; // [{points, shape}]: prior or mixture draws to mark
    [this.x0, this.x1, this.y0, this.y1] = spec.view;
    this.decoder = new LiveDecoder(name, (text) => this.url(text), draw);
    explorer.stats[name] = [];
    explorer.moves[name] = 0;
    const onPointer = (event) => {
      const moved = performance.now();
      if (event.type === "pointerdown") this.overlay.setPointerCapture(event.pointerId);
      explorer.moves[name] += 1;
      explorer.pointerType = event.pointerType; // "mouse", "pen" or "touch"
      const rect = this.overlay.getBoundingClientRect();
      this.visit(this.toLatent(event.clientX - rect.left, event.clientY - rect.top, rect), moved);
    };
    this.overlay.addEventListener("pointermove", onPointer);
    this.overlay.addEventListener("pointerdown", onPointer);
    new ResizeObserver(() => this.resize()).observe(root);
  }

  url(text) {
    const digit = this.spec.conditional ? "&digit=all" : "";
    return `/api/decode?model=${this.name}&z=${text}${digit}`;
  }

  // CSS pixels <-> latent units, y up; the view is square, so one scale serves both axes.
  toLatent(px, py, rect) {
    const x = this.x0 + Math.min(Math.max(px / rect.width, 0), 1) * (this.x1 - this.x0);
    const y = this.y1 - Math.min(Math.max(py / rect.height, 0), 1) * (this.y1 - this.y0);
    return [x, y];
  }

  toPixel(x, y) {
    return [(x - this.x0) / (this.x1 - this.x0) * this.width, (this.y1 - y) / (this.y1 - this.y0) * this.height];
  }

  visit([x, y], moved) {
    this.pointer = [x, y];
    const z = [x, y, ...new Array(this.spec.latent_dim - 2).fill(0)];
    const digits = this.x1 - this.x0 > 40 ? 1 : 2;
    const d = this.spec.latent_dim;
    const rest = d > 3 ? ` (dimensions 3–${d} at 0)` : d === 3 ? " (dimension 3 at 0)" : "";
    this.coords.textContent = `z = (${x.toFixed(digits)}, ${y.toFixed(digits)})${rest}`;
    this.drawOverlay();
    this.decoder.want(z, moved);
  }

  resize() {
    const rect = this.root.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    this.width = this.root.clientWidth;
    this.height = this.root.clientHeight;
    for (const canvas of [this.base, this.overlay]) {
      canvas.width = Math.round(this.width * ratio);
      canvas.height = Math.round(this.height * ratio);
      canvas.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
    }
    if (rect.width > 0) {
      this.drawBase();
      this.drawOverlay();
    }
  }

  drawBase() {
    const ctx = this.base.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#6b6b6b";
    ctx.strokeStyle = "#ececec";
    ctx.lineWidth = 1;
    for (const x of ticks(this.x0, this.x1)) {
      const [px] = this.toPixel(x, 0);
      ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, this.height); ctx.stroke();
      ctx.fillText(String(x), px + 2, this.height - 4);
    }
    for (const y of ticks(this.y0, this.y1)) {
      const [, py] = this.toPixel(0, y);
      ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(this.width, py); ctx.stroke();
      ctx.fillText(String(y), 3, py - 2);
    }
    const { codes, labels, box } = this.spec;
    if (codes) {
      ctx.globalAlpha = 0.55;
      for (let c = 0; c < PALETTE.length; c++) {
        ctx.fillStyle = PALETTE[c];
        for (let i = 0; i < codes.length; i++) {
          if (labels[i] !== c) continue;
          const [px, py] = this.toPixel(codes[i][0], codes[i][1]);
          ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
        }
      }
      ctx.globalAlpha = 1;
    }
    ctx.strokeStyle = "#333";
    ctx.fillStyle = "#333";
    ctx.setLineDash([5, 4]);
    if (this.name === "ae" && box) { // the box the AE's test codes span
      const [ax, ay] = this.toPixel(box[0], box[3]);
      const [bx, by] = this.toPixel(box[2], box[1]);
      ctx.strokeRect(ax, ay, bx - ax, by - ay);
      ctx.fillText("code box", ax + 4, ay + 13);
    }
    const scale = this.width / (this.x1 - this.x0);
    const [ox, oy] = this.toPixel(0, 0);
    for (const sigma of [1, 2]) { // the prior N(0, I): its 1σ and 2σ circles
      ctx.beginPath();
      ctx.arc(ox, oy, sigma * scale, 0, 2 * Math.PI);
      ctx.stroke();
      if (sigma * scale > 12) ctx.fillText(`${sigma}σ`, ox + sigma * scale * 0.72 + 2, oy - sigma * scale * 0.72 - 2);
    }
    ctx.setLineDash([]);
  }

  drawOverlay() {
    const ctx = this.overlay.getContext("2d");
    ctx.clearRect(0, 0, this.width, this.height);
    for (const { points, shape } of this.marks) {
      for (const z of points) {
        const [px, py] = this.toPixel(z[0], z[1]);
        ctx.beginPath();
        if (shape === "diamond") {
          ctx.moveTo(px, py - 5); ctx.lineTo(px + 5, py); ctx.lineTo(px, py + 5); ctx.lineTo(px - 5, py);
          ctx.closePath();
        } else {
          ctx.arc(px, py, 3.5, 0, 2 * Math.PI);
        }
        ctx.fillStyle = shape === "diamond" ? "#fde68a" : "#111";
        ctx.strokeStyle = shape === "diamond" ? "#92400e" : "#fff";
        ctx.lineWidth = 1.2;
        ctx.fill();
        ctx.stroke();
      }
    }
    const [px, py] = this.toPixel(...this.pointer); // where the shown digit comes from
    ctx.strokeStyle = "#c2410c";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(px, py, 7, 0, 2 * Math.PI);
    ctx.moveTo(px - 12, py); ctx.lineTo(px - 4, py);
    ctx.moveTo(px + 4, py); ctx.lineTo(px + 12, py);
    ctx.moveTo(px, py - 12); ctx.lineTo(px, py - 4);
    ctx.moveTo(px, py + 4); ctx.lineTo(px, py + 12);
    ctx.stroke();
  }
}

function digitCanvas(name) {
  return document.querySelector(`canvas.digit[data-model="${name}"]`);
}

function drawDigit(canvas, bitmap, column = 0) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, IMAGE, IMAGE);
  ctx.drawImage(bitmap, column * IMAGE, 0, IMAGE, IMAGE, 0, 0, IMAGE, IMAGE);
}

function buildConditional(classNames) {
  const buttons = document.getElementById("digit-buttons");
  const row = document.getElementById("row");
  let strip = null; // the last row of ten decoded digits (an ImageBitmap)
  const pick = (digit) => {
    explorer.digit = digit;
    buttons.querySelectorAll("button").forEach((b, i) => b.setAttribute("aria-pressed", String(i === digit)));
    row.querySelectorAll("canvas").forEach((c, i) => c.classList.toggle("picked", i === digit));
    if (strip) drawDigit(digitCanvas("cvae"), strip, digit);
  };
  classNames.forEach((label, digit) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.dataset.digit = String(digit);
    button.addEventListener("click", () => pick(digit));
    buttons.append(button);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = IMAGE;
    canvas.dataset.digit = String(digit);
    canvas.title = label;
    row.append(canvas);
  });
  pick(0);
  return (bitmap, job) => {
    strip?.close();
    strip = bitmap;
    row.querySelectorAll("canvas").forEach((canvas, i) => {
      drawDigit(canvas, bitmap, i);
      canvas.dataset.z = job.text;
    });
    drawDigit(digitCanvas("cvae"), bitmap, explorer.digit);
    digitCanvas("cvae").dataset.z = job.text;
  };
}

async function drawSamples() {
  const button = document.getElementById("sample");
  button.disabled = true;
  try {
    const sample = await getJSON("/api/sample");
    const loads = ["ae", "vae", "gmm"].map((key) => {
      const img = document.getElementById(`grid-${key}`);
      img.src = sample.grids[key].image;
      return img.decode();
    });
    await Promise.all(loads);
    explorer.planes.ae.marks = [{ points: sample.grids.ae.z, shape: "dot" },
                                { points: sample.grids.gmm.z, shape: "diamond" }];
    explorer.planes.vae.marks = [{ points: sample.grids.vae.z, shape: "dot" }];
    explorer.planes.ae.drawOverlay();
    explorer.planes.vae.drawOverlay();
    explorer.sample = sample;
    setStatus(`Prior draw with seed ${sample.seed}: AE (left), VAE (middle), AE + mixture (right).`);
  } catch (err) {
    setStatus(`sampling: ${err.message}`, true);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  const info = await getJSON("/api/info");
  explorer.info = info;
  const legend = document.getElementById("legend");
  info.class_names.forEach((label, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[i];
    item.append(swatch, label);
    legend.append(item);
  });
  const drawCvae = buildConditional(info.class_names);
  for (const name of ["ae", "vae", "cvae"]) {
    const root = document.querySelector(`.plane[data-model="${name}"]`);
    const draw = name === "cvae" ? drawCvae : (bitmap, job) => {
      const canvas = digitCanvas(name);
      drawDigit(canvas, bitmap);
      canvas.dataset.z = job.text;
      bitmap.close();
    };
    const plane = new Plane(name, root, info.models[name], draw);
    explorer.planes[name] = plane;
    plane.resize();
    plane.visit([0, 0], performance.now()); // start at the origin, where the prior is centred
  }
  const sampleButton = document.getElementById("sample");
  sampleButton.addEventListener("click", drawSamples);
  sampleButton.disabled = false;
  await new Promise((resolve) => {
    const allSettled = () => Object.keys(explorer.planes).every((name) => explorer.settled(name));
    const check = () => (allSettled() ? resolve() : setTimeout(check, 5));
    check();
  });
  explorer.ready = true;
  setStatus("Ready: move the pointer over a plane.");
}

start().catch((err) => setStatus(`could not start: ${err.message}`, true));
