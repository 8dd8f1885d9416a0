/* mailstorm report: draws the chart specs of reports/charts.py with uPlot (inlined above this script).
 * Hover: the legend under a chart shows every series' value at the cursor. Drag across a chart: zoom
 * its x axis (the timeline panels zoom and hover together); double-click: back to the whole run. Click
 * a legend entry: hide or show that series. Exposes window.mailstormCharts (id -> uPlot) for tests. */
(function () {
  "use strict";
  const source = document.getElementById("chart-data");
  if (!source || typeof uPlot === "undefined") return;
  const specs = JSON.parse(source.textContent);
  const charts = {};
  window.mailstormCharts = charts;

  function fmt(v, unit) {
    if (v == null || Number.isNaN(v)) return "—";
    const a = Math.abs(v);
    let s;
    if (a >= 100 || Number.isInteger(v)) s = Math.round(v).toLocaleString("en-US");
    else if (a >= 10) s = v.toFixed(1);
    else s = v.toFixed(2).replace(/\.?0+$/, "") || "0";
    return unit ? s + " " + unit : s;
  }

  function alpha(hex, a) {
    const n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }

  function series(s, unit, joined) {
    const out = { label: s.label, stroke: s.color, width: 1.4, value: (u, v) => fmt(v, unit) };
    if (s.dash) out.dash = [6, 4];
    if (s.kind === "points") {
      out.paths = () => null;
      out.points = { show: true, size: 8, fill: s.color, stroke: s.color };
    } else {
      out.points = { show: false };
      out.spanGaps = !!joined;  // joined: other series' x values leave holes in this one, not gaps
    }
    if (s.kind === "area") {  // per-second counts: a step per second, filled
      out.paths = uPlot.paths.stepped({ align: 1 });
      out.fill = alpha(s.color, 0.3);
    }
    return out;
  }

  // Fault windows shaded behind the series, their names along the top; marks as dotted lines.
  function shade(u, spec) {
    const ctx = u.ctx, top = u.bbox.top, h = u.bbox.height, dpr = devicePixelRatio || 1;
    ctx.save();
    (spec.bands || []).forEach((b, i) => {
      const x0 = Math.max(u.valToPos(b.start, "x", true), u.bbox.left);
      const x1 = Math.min(u.valToPos(b.end, "x", true), u.bbox.left + u.bbox.width);
      if (x1 <= x0) return;
      ctx.fillStyle = "rgba(239,68,68,0.12)";
      ctx.fillRect(x0, top, x1 - x0, h);
      ctx.fillStyle = "#ef4444";
      ctx.font = 11 * dpr + "px system-ui, sans-serif";
      ctx.textAlign = "left";  // uPlot leaves its axis labels' alignment set
      ctx.textBaseline = "alphabetic";
      ctx.fillText(b.label, x0 + 3 * dpr, top + (12 + 12 * (i % 2)) * dpr);
    });
    (spec.marks || []).forEach((m) => {
      const x = u.valToPos(m.at, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
      ctx.strokeStyle = "#16a34a";
      ctx.setLineDash([2 * dpr, 3 * dpr]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + h);
      ctx.stroke();
    });
    ctx.restore();
  }

  // A log axis: a line and a label per decade (uPlot's default also rules every 2..9 of each one);
  // 1-2-5 steps when the range (zoomed in) spans less than two decades.
  function decades(u, axis, min, max) {
    for (const steps of [[1], [1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
      const out = [];
      for (let p = Math.floor(Math.log10(min)); p <= Math.ceil(Math.log10(max)); p++) {
        for (const m of steps) {
          const v = m * Math.pow(10, p);
          if (v >= min && v <= max) out.push(v);
        }
      }
      if (out.length >= 2) return out;
    }
    return [min, max];
  }

  // A linear y axis starts at 0 (a zoomed-in backlog or rate is not read as a drop to nothing).
  function fromZero(u, min, max) {
    if (min == null || max == null) return [0, 1];
    const lo = Math.min(0, min);
    return [lo, max > lo ? max + (max - lo) * 0.05 : lo + 1];
  }

  function axis(label, log, extra) {
    const a = { label, grid: { stroke: "#e5e7eb" }, ...extra };
    if (log) {
      a.splits = decades;
      a.values = (u, vals) => vals.map((v) => (v == null ? "" : fmt(v, "")));  // null: no room for it
    }
    return a;
  }

  const zoomGroups = {};
  function syncZoom(u, key, group) {
    const g = group && zoomGroups[group];
    if (key !== "x" || !g || g.busy) return;  // also: a chart still being made (its group not yet set)
    g.busy = true;
    const { min, max } = u.scales.x;
    g.charts.forEach((o) => { if (o !== u) o.setScale("x", { min, max }); });
    g.busy = false;
  }

  function make(spec) {
    const el = document.getElementById("chart-" + spec.id);
    if (!el) return;
    const xunit = spec.x.unit;
    const opts = {
      title: spec.title,
      width: Math.max(el.clientWidth, 320),
      height: spec.height || 240,
      scales: {
        x: { time: false, distr: spec.x.log ? 3 : 1 },
        y: spec.y.log ? { distr: 3 } : { range: fromZero },
      },
      axes: [axis(spec.x.label, spec.x.log, {}), axis(spec.y.label, spec.y.log, { size: 60 })],
      series: [
        { label: spec.x.name, value: (u, v) => fmt(v, xunit) },
        ...spec.series.map((s) => series(s, spec.y.unit, spec.joined)),
      ],
      cursor: {
        drag: { x: true, y: false, setScale: true },
        sync: spec.sync ? { key: spec.sync, setSeries: false } : undefined,
      },
      legend: { live: true },
      hooks: {
        drawClear: [(u) => shade(u, spec)],
        setScale: [(u, key) => syncZoom(u, key, spec.sync)],
      },
    };
    const u = new uPlot(opts, spec.data, el);
    charts[spec.id] = u;
    if (spec.sync) {
      zoomGroups[spec.sync] = zoomGroups[spec.sync] || { charts: [], busy: false };
      zoomGroups[spec.sync].charts.push(u);
    }
  }

  // Each section's chart, or list of charts, or null (nothing to show): every spec is drawn.
  Object.values(specs).forEach((v) => [].concat(v || []).forEach(make));

  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      Object.entries(charts).forEach(([id, u]) => {
        const el = document.getElementById("chart-" + id);
        u.setSize({ width: Math.max(el.clientWidth, 320), height: u.height });
      });
    }, 100);
  });
  document.documentElement.setAttribute("data-charts", String(Object.keys(charts).length));
})();
