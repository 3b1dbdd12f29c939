// The live page: one EventSource on /api/events; everything below redraws from what it pushes.
"use strict";
const $ = (id) => document.getElementById(id);
const scores = [];  // [frame, score, alarm]
const KEEP = 1500;
let threshold = null;
let lastFrame = -1;

function bytes(n) { return n >= 1048576 ? (n / 1048576).toFixed(2) + " MiB" : (n / 1024).toFixed(1) + " KiB"; }
function clock(iso) { return iso ? new Date(iso).toLocaleTimeString() : "-"; }
function text(id, value) { $(id).textContent = value; }

function showStatus(s) {
  text("camera", s.camera);
  document.title = s.camera + " · line monitor";
  const state = $("state");
  state.textContent = s.state;
  state.className = "pill " + s.state;
  $("alarm-now").hidden = !s.alarm_open;
  document.querySelector(".live").classList.toggle("alarm", s.alarm_open);
  threshold = s.threshold;
  text("threshold", threshold == null ? "-" : threshold.toFixed(3));
  text("fps", s.fps.toFixed(1));
  text("latency", s.latency_ms_p50.toFixed(1) + " / " + s.latency_ms_p99.toFixed(1) + " ms");
  text("memory", bytes(s.state_bytes));
  text("frames", s.frames);
  text("skipped", s.skipped);
  text("since", s.seconds_since_frame == null ? "-" : s.seconds_since_frame.toFixed(1) + " s");
  text("alarms", s.alarms);
  text("dropped", s.dropped);
  $("dropped").classList.toggle("bad", s.dropped > 0);
  $("skipped").classList.toggle("bad", s.skipped > 0);
  const parts = [];
  for (const [name, k] of Object.entries(s.sinks || {})) {
    const link = name === "mqtt" ? (k.connected ? "connected" : "not connected") :
      (k.reachable === false ? "unreachable" : "ok");
    parts.push(`${name}: ${link}, ${k.sent} sent, ${k.owed} owed`);
  }
  if (s.evidence) parts.push(`evidence: ${s.evidence.written} clips (${s.evidence.codec})` + (s.evidence.failed ? `, ${s.evidence.failed} failed` : ""));
  text("sinks", parts.join(" · "));
  if (s.frame != null && s.frame !== lastFrame) {
    lastFrame = s.frame;
    $("frame").src = "/api/frame.png?f=" + s.frame;
    text("frame-no", s.frame);
  }
}

function showAlarms(list) {
  const body = $("alarm-rows");
  body.replaceChildren();
  if (!list.length) {
    body.innerHTML = '<tr><td colspan="8" class="none">none yet</td></tr>';
    return;
  }
  for (const a of list.slice().reverse()) {  // newest first
    const tr = document.createElement("tr");
    if (a.open) tr.className = "open";
    const cells = [a.id, a.start, a.open ? "…" : a.end, clock(new Date(a.start_time * 1000).toISOString()),
      a.duration_s.toFixed(1) + " s", a.peak_score.toFixed(2), a.branch || "-"];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    const td = document.createElement("td");
    if (a.evidence && !a.open) {
      const link = document.createElement("a");
      link.href = "/clips/" + encodeURIComponent(a.evidence);
      link.textContent = "clip";
      link.target = "_blank";
      td.appendChild(link);
    } else td.textContent = "-";
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function drawTimeline() {
  const canvas = $("timeline");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  if (!scores.length) return;
  const first = scores[0][0], last = scores[scores.length - 1][0];
  const span = Math.max(last - first, 1);
  let lo = Infinity, hi = -Infinity;
  for (const s of scores) { lo = Math.min(lo, s[1]); hi = Math.max(hi, s[1]); }
  if (threshold != null) { lo = Math.min(lo, threshold); hi = Math.max(hi, threshold); }
  const pad = (hi - lo) * 0.08 || 1;
  lo -= pad; hi += pad;
  const x = (f) => 34 + (w - 40) * (f - first) / span;
  const y = (v) => 6 + (h - 22) * (1 - (v - lo) / (hi - lo));
  g.fillStyle = "rgba(255, 77, 79, 0.28)";  // alarms shaded
  const step = (w - 40) / span;
  for (const s of scores) if (s[2]) g.fillRect(x(s[0]) - step / 2, 6, Math.max(step, 1), h - 22);
  g.strokeStyle = "#4fb3ff"; g.lineWidth = 1.2; g.beginPath();
  scores.forEach((s, i) => (i ? g.lineTo(x(s[0]), y(s[1])) : g.moveTo(x(s[0]), y(s[1]))));
  g.stroke();
  if (threshold != null) {
    g.strokeStyle = "#ff4d4f"; g.setLineDash([5, 4]); g.beginPath();
    g.moveTo(34, y(threshold)); g.lineTo(w - 6, y(threshold)); g.stroke(); g.setLineDash([]);
  }
  g.fillStyle = "#8a94a3"; g.font = "11px system-ui, sans-serif";
  g.fillText(hi.toFixed(1), 2, 14); g.fillText(lo.toFixed(1), 2, h - 18);
  g.fillText("frame " + first, 34, h - 4);
  const tail = "frame " + last; g.fillText(tail, w - 6 - g.measureText(tail).width, h - 4);
}

function connect() {
  const events = new EventSource("/api/events");
  events.addEventListener("status", (e) => {
    const d = JSON.parse(e.data);
    if (d.reset) scores.length = 0;
    for (const s of d.scores) scores.push(s);
    if (scores.length > KEEP) scores.splice(0, scores.length - KEEP);
    showStatus(d.status);
    if (scores.length) text("score", scores[scores.length - 1][1].toFixed(3));
    if (d.alarms) showAlarms(d.alarms);
    drawTimeline();
  });
  events.onerror = () => { $("state").textContent = "reconnecting"; $("state").className = "pill"; };
}

window.addEventListener("resize", drawTimeline);
connect();
