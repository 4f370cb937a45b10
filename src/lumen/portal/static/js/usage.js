// The usage chart: stacked bars per time bucket and model, key or source, drawn with Chart.js
// (vendored) from the page's /usage/data URL. The tables of the page hold the same numbers, so
// the page is complete without this script; the chart follows the light or dark theme.
(function () {
  "use strict";

  // Okabe–Ito: told apart with every common colour-vision deficiency, on light and dark backgrounds.
  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999"];
  var TITLES = { requests: "Requests", tokens: "Tokens", coins: "Coins" };

  function themeColours(box) {
    var style = window.getComputedStyle(box);
    return { text: style.color, grid: style.borderTopColor };
  }

  function reducedMotion() {
    return window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  function build(canvas, box, data, metric) {
    var colours = themeColours(box);
    var datasets = data.datasets.map(function (set, i) {
      return {
        label: set.label,
        data: set[metric],
        backgroundColor: PALETTE[i % PALETTE.length],
        borderWidth: 0,
      };
    });
    return new window.Chart(canvas, {
      type: "bar",
      data: { labels: data.labels, datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: reducedMotion() ? false : { duration: 250 },
        scales: {
          x: { stacked: true, ticks: { color: colours.text }, grid: { color: colours.grid } },
          y: {
            stacked: true,
            beginAtZero: true,
            title: { display: true, text: TITLES[metric], color: colours.text },
            ticks: { color: colours.text, precision: metric === "coins" ? undefined : 0 },
            grid: { color: colours.grid },
          },
        },
        plugins: {
          legend: { labels: { color: colours.text } },
          tooltip: { mode: "index", intersect: false },
        },
      },
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var canvas = document.getElementById("usage-chart");
    var box = document.getElementById("chart-box");
    var tools = document.getElementById("chart-tools");
    var status = document.getElementById("chart-status");
    if (!canvas || !box || !window.Chart) {
      return;
    }
    var chart = null;
    var data = null;
    var metric = "requests";

    function draw() {
      if (chart) {
        chart.destroy();
      }
      chart = build(canvas, box, data, metric);
    }

    status.textContent = "Loading the chart…";
    window.lumen
      .fetch(canvas.getAttribute("data-src"))
      .then(function (response) {
        if (!response.ok) {
          throw new Error("the server answered " + response.status);
        }
        return response.json();
      })
      .then(function (loaded) {
        data = loaded;
        box.hidden = false;
        tools.hidden = false;
        status.textContent = "";
        draw();
      })
      .catch(function (error) {
        status.textContent = "The chart could not be loaded (" + error.message + "); the tables below have the numbers.";
      });

    tools.querySelectorAll("[data-metric]").forEach(function (button) {
      button.addEventListener("click", function () {
        metric = button.getAttribute("data-metric");
        tools.querySelectorAll("[data-metric]").forEach(function (other) {
          other.setAttribute("aria-pressed", other === button ? "true" : "false");
        });
        if (data) {
          draw();
        }
      });
    });

    // Redraw with the new colours when the theme changes (the header's toggle, or the system's).
    function redraw() {
      if (data) {
        draw();
      }
    }
    new MutationObserver(redraw).observe(document.documentElement, {
      attributes: true,
      attributeFilter: ["data-theme"],
    });
    if (window.matchMedia) {
      window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
    }
  });
})();
