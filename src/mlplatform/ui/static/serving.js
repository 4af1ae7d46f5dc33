// A model's serving page: draws the series in #serving-live's data-series (JSON the server rendered) with
// uPlot, and redraws it each time htmx swaps in a fresh #serving-live. No inline script: CSP allows only our
// files.
(function () {
  "use strict";
  var charts = {};

  function series() {
    var element = document.getElementById("serving-live");
    var text = element && element.getAttribute("data-series");
    return text ? JSON.parse(text) : null;
  }

  function width(element) {
    return Math.max(280, Math.floor(element.getBoundingClientRect().width));
  }

  function options(kind, element, step) {
    var minutes = Math.round(step / 60);
    var lines = kind === "traffic"
      ? [
          { label: "predictions / " + minutes + " min", stroke: "#0a4fb3", width: 2, fill: "rgba(10,79,179,0.08)" },
          { label: "errors / " + minutes + " min", stroke: "#a4161a", width: 2 }
        ]
      : [
          { label: "p50 ms", stroke: "#0b6b2e", width: 2, points: { show: true, size: 5 } },
          { label: "p95 ms", stroke: "#8a4b00", width: 2, points: { show: true, size: 5 } },
          { label: "p99 ms", stroke: "#a4161a", width: 2, points: { show: true, size: 5 } }
        ];
    return {
      width: width(element),
      height: 220,
      series: [{}].concat(lines),
      scales: { x: { time: true } },
      axes: [{}, { size: 60 }],
      legend: { live: true }
    };
  }

  function columns(kind, data) {
    return kind === "traffic"
      ? [data.t, data.predictions, data.errors]
      : [data.t, data.p50, data.p95, data.p99];
  }

  function draw() {
    var data = series();
    if (!data || typeof window.uPlot !== "function") {
      return;
    }
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var kind = element.getAttribute("data-chart");
      var existing = charts[kind];
      if (existing && existing.step === data.step) {
        existing.plot.setData(columns(kind, data));
        return;
      }
      if (existing) {
        existing.plot.destroy();
      }
      charts[kind] = {
        step: data.step,
        plot: new window.uPlot(options(kind, element, data.step), columns(kind, data), element)
      };
    });
  }

  var detailsOpen = false;
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "serving-live") {
      var details = document.getElementById("series-table");
      detailsOpen = Boolean(details && details.open);
    }
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.target && event.detail.target.id === "serving-live") {
      var details = document.getElementById("series-table");
      if (details && detailsOpen) {
        details.open = true;
      }
    }
    draw();
  });
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (kind) {
      var element = document.querySelector('[data-chart="' + kind + '"]');
      if (element) {
        charts[kind].plot.setSize({ width: width(element), height: 220 });
      }
    });
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
