// The well page's trend charts (services/api/console/well.py, /series): one uPlot chart per
// chosen metric, the line the average and a band from min to max when the data is
// bucketed. The server never sends more points than the width asked for, so the width
// sent is the chart's, and a chart that changes width much asks again. Reads only (GET
// with the session cookie): no CSRF token needed.
"use strict";

(() => {
  const form = document.getElementById("trend-form");
  const box = document.getElementById("charts");
  const note = document.getElementById("chart-note");
  if (!form || !box || typeof uPlot === "undefined") return;

  const HEIGHT = 220;
  const COLOURS = ["#1f5fbf", "#b3261e", "#1e7a3c", "#9a6b00", "#6a3fb5", "#00796b",
                   "#c2185b", "#455a64"];
  const custom = document.getElementById("custom-range");
  const sync = uPlot.sync("well");
  let charts = [];
  let fetchedWidth = 0;
  let pending = null;

  function chartWidth() {
    // The charts' column, less the card's padding and border.
    return Math.max(100, Math.min(4000, Math.floor(box.clientWidth) - 20));
  }

  function chosen() {
    const metrics = [...form.querySelectorAll("input[name=metric]:checked")].map((i) => i.value);
    const range = (form.querySelector("input[name=range]:checked") || {}).value || "24h";
    return { metrics, range };
  }

  // datetime-local gives no zone: the page says UTC, so it is read as UTC.
  function utc(value) {
    return value ? new Date(value + "Z").toISOString() : "";
  }

  function query(width) {
    const { metrics, range } = chosen();
    const params = new URLSearchParams({ metrics: metrics.join(","), width: String(width) });
    if (range === "custom") {
      const start = utc(form.elements.start.value);
      const end = utc(form.elements.end.value);
      if (!start) return null;
      params.set("start", start);
      if (end) params.set("end", end);
    } else {
      params.set("range", range);
    }
    return params;
  }

  function say(text) {
    note.textContent = text;
  }

  function describe(data) {
    if (data.bucket_seconds === null) return "raw readings";
    const s = data.bucket_seconds;
    const size = s % 86400 === 0 ? `${s / 86400} d` : s % 3600 === 0 ? `${s / 3600} h`
      : s % 60 === 0 ? `${s / 60} min` : `${s} s`;
    const from = { rollup_1h: "hourly rollup", rollup_1m: "per-minute rollup", raw: "raw rows" };
    return `${size} buckets (avg, band min–max) from the ${from[data.source] || data.source}`;
  }

  function draw(data, width) {
    charts.forEach((c) => c.destroy());
    charts = [];
    box.replaceChildren();
    Object.entries(data.series).forEach(([name, s], n) => {
      const card = document.createElement("div");
      card.className = "chart";
      card.dataset.metric = name;
      const title = document.createElement("h3");
      title.textContent = name;
      const unit = document.createElement("small");
      unit.textContent = s.unit ? ` ${s.unit}` : "";
      title.appendChild(unit);
      card.appendChild(title);
      box.appendChild(card);
      if (!s.t.length) {
        const empty = document.createElement("p");
        empty.className = "empty";
        empty.textContent = "No readings in this range.";
        card.appendChild(empty);
        return;
      }
      const colour = COLOURS[n % COLOURS.length];
      const series = [{}, { label: name, stroke: colour, width: 1.5, spanGaps: false }];
      const columns = [s.t, s.avg];
      const opts = {
        width, height: HEIGHT, series, legend: { live: true },
        scales: { x: { time: true, range: [data.start, data.end] } },
        axes: [{}, { size: 60 }],
        cursor: { sync: { key: sync.key } },
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      };
      if (s.min) {
        series.push({ label: "min", stroke: "transparent", points: { show: false } },
                    { label: "max", stroke: "transparent", points: { show: false } });
        columns.push(s.min, s.max);
        opts.bands = [{ series: [3, 2], fill: colour + "26" }];
      }
      charts.push(new uPlot(opts, columns, card));
    });
  }

  async function load() {
    const width = chartWidth();
    const params = query(width);
    if (params === null) { say("Choose a start for the custom range."); return; }
    if (!chosen().metrics.length) { draw({ series: {} }, width); say("Choose a metric."); return; }
    if (pending) pending.abort();
    pending = new AbortController();
    say("Loading…");
    let answer;
    try {
      answer = await fetch(`${form.dataset.series}?${params}`, {
        credentials: "same-origin", headers: { Accept: "application/json" },
        signal: pending.signal });
    } catch (error) {
      if (error.name !== "AbortError") say("The platform did not answer.");
      return;
    }
    const type = answer.headers.get("content-type") || "";
    if (answer.ok && !type.startsWith("application/json")) {
      window.location.reload();  // the session ended: the page goes to login and back
      return;
    }
    if (!answer.ok) {
      const text = type.startsWith("text/html")
        ? new DOMParser().parseFromString(await answer.text(), "text/html")
            .querySelector(".problem p")?.textContent : "";
      say(`Could not load the trend (${answer.status}) ${text || ""}`);
      return;
    }
    const data = await answer.json();
    fetchedWidth = width;
    draw(data, width);
    say(describe(data));
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    const width = chartWidth();
    charts.forEach((c) => c.setSize({ width, height: HEIGHT }));
    clearTimeout(resizing);
    // Narrower than the data (more points than pixels) or much wider: ask again.
    resizing = setTimeout(() => {
      if (width < fetchedWidth || width > fetchedWidth * 1.25) load();
    }, 400);
  });

  form.addEventListener("change", (event) => {
    const range = chosen().range;
    custom.hidden = range !== "custom";
    if (event.target.name === "start" || event.target.name === "end") return;
    if (range !== "custom" || form.elements.start.value) load();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });

  custom.hidden = true;
  load();
})();
