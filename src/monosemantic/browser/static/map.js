// Feature map: the UMAP points on a canvas. Wheel zooms, drag pans, hover names a point, click opens
// it. Colour by log density, cluster or top source. Data comes from <script id="map-data">.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const P = data.points, n = P.x.length;
  const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
  const tip = document.getElementById("tip"), legend = document.getElementById("legend");
  const select = document.getElementById("colour");
  const minX = Math.min(...P.x), maxX = Math.max(...P.x), minY = Math.min(...P.y), maxY = Math.max(...P.y);
  const pad = 20;
  let scale = Math.min((canvas.width - 2 * pad) / (maxX - minX || 1), (canvas.height - 2 * pad) / (maxY - minY || 1));
  let ox = pad - minX * scale, oy = pad - minY * scale;
  const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const sources = Array.from(new Set(P.source)).sort();

  function project(i) { return [P.x[i] * scale + ox, P.y[i] * scale + oy]; }
  function colour(i) {
    const mode = select.value;
    if (mode === "cluster") return P.cluster[i] < 0 ? "#ccc" : palette[P.cluster[i] % palette.length];
    if (mode === "source") return palette[sources.indexOf(P.source[i]) % palette.length];
    const d = P.density[i];
    if (!(d > 0)) return "#000";
    const t = Math.max(0, Math.min(1, (Math.log10(d) + 7) / 7));  // 1e-7 .. 1
    return "hsl(" + (240 - 240 * t).toFixed(0) + ",80%,45%)";
  }
  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < n; i++) {
      const [x, y] = project(i);
      if (x < -3 || y < -3 || x > canvas.width + 3 || y > canvas.height + 3) continue;
      ctx.fillStyle = colour(i);
      ctx.fillRect(x - 2, y - 2, 4, 4);
    }
    const mode = select.value;
    legend.textContent = mode === "density" ? "blue: rare (1e-7) … red: dense (1); black: dead"
      : mode === "source" ? sources.map((s, k) => s + " = " + palette[k % palette.length]).join(", ")
      : data.clusters.map((c) => c.label + " (" + c.size + ")").join(" · ");
  }
  function nearest(mx, my) {
    let best = -1, bd = 36;
    for (let i = 0; i < n; i++) {
      const [x, y] = project(i), d = (x - mx) ** 2 + (y - my) ** 2;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }
  function mouse(e) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  }
  let drag = null, moved = false;
  canvas.addEventListener("mousedown", (e) => { drag = mouse(e); moved = false; });
  window.addEventListener("mouseup", () => { drag = null; });
  canvas.addEventListener("mousemove", (e) => {
    const [mx, my] = mouse(e);
    if (drag) {
      if (Math.abs(mx - drag[0]) + Math.abs(my - drag[1]) > 2) moved = true;
      ox += mx - drag[0]; oy += my - drag[1]; drag = [mx, my]; draw(); return;
    }
    const i = nearest(mx, my);
    tip.hidden = i < 0;
    if (i >= 0) {
      tip.textContent = "#" + P.feature[i] + " " + P.label[i];
      tip.style.left = (mx + 10) + "px"; tip.style.top = (my + 10) + "px";
    }
  });
  canvas.addEventListener("click", (e) => {
    if (moved) return;
    const [mx, my] = mouse(e), i = nearest(mx, my);
    if (i >= 0) window.location.href = data.url.replace("{f}", String(P.feature[i]));
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [mx, my] = mouse(e), k = e.deltaY < 0 ? 1.25 : 0.8;
    ox = mx - (mx - ox) * k; oy = my - (my - oy) * k; scale *= k; draw();
  }, { passive: false });
  select.addEventListener("change", draw);
  // for tests and scripts: where point i is drawn, in canvas pixels, and which feature it is
  window.monosemanticMap = { project: project, feature: (i) => P.feature[i], count: n };
  draw();
})();
