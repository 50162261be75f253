// Administrator console: dashboard charts (Chart.js, vendored). Money arrives as integer fen in strings
// and is formatted by string arithmetic only: no float ever touches an amount.
(function () {
  "use strict";

  function yuan(fenText) {
    var s = String(fenText);
    var neg = s.charAt(0) === "-";
    if (neg) s = s.slice(1);
    if (!/^[0-9]+$/.test(s)) return "";
    while (s.length < 3) s = "0" + s;
    var whole = s.slice(0, -2).replace(/^0+(?=[0-9])/, "");
    var part = s.slice(-2);
    whole = whole.replace(/\B(?=([0-9]{3})+(?![0-9]))/g, ",");
    return (neg ? "-" : "") + "¥" + whole + "." + part;
  }
  window.consoleYuan = yuan;

  // Chart.js scales need numbers: whole yuan (integer division on the string) is exact enough for a bar.
  function wholeYuan(fenText) {
    var s = String(fenText);
    return s.length > 2 ? parseInt(s.slice(0, -2), 10) : 0;
  }

  var holder = document.getElementById("dashboard");
  if (!holder || typeof Chart === "undefined") return;
  Chart.defaults.animation = false;

  function chart(id, config) {
    var canvas = document.getElementById(id);
    if (canvas) new Chart(canvas, config);
  }

  function money(fenTexts) {
    return {
      callbacks: {
        label: function (item) {
          return (item.dataset.label ? item.dataset.label + ": " : "") + yuan(fenTexts[item.datasetIndex][item.dataIndex]);
        }
      }
    };
  }

  fetch(holder.getAttribute("data-url"), { headers: { "X-Requested-With": "fetch", Accept: "application/json" }, credentials: "same-origin" })
    .then(function (r) { if (!r.ok) throw new Error("dashboard " + r.status); return r.json(); })
    .then(function (d) {
      var L = d.labels;
      var bucketFen = d.buckets.map(function (b) { return b.fen; });
      chart("chart-buckets", {
        type: "bar",
        data: { labels: d.buckets.map(function (b) { return b.label; }),
                datasets: [{ data: bucketFen.map(wholeYuan), backgroundColor: "#b3261e" }] },
        options: { indexAxis: "y", plugins: { legend: { display: false }, tooltip: money([bucketFen]) },
                   maintainAspectRatio: false }
      });
      chart("chart-tiers", {
        type: "bar",
        data: { labels: d.tiers.map(function (t) { return t.code; }),
                datasets: [{ label: L.claimed, data: d.tiers.map(function (t) { return t.claimed; }), backgroundColor: "#e8a33d" },
                           { label: L.redeemed, data: d.tiers.map(function (t) { return t.redeemed; }), backgroundColor: "#2e7d32" }] },
        options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }
      });
      chart("chart-daily", {
        type: "line",
        data: { labels: d.daily.map(function (x) { return x.day; }),
                datasets: [{ label: L.claims, data: d.daily.map(function (x) { return x.claims; }), borderColor: "#e8a33d", backgroundColor: "#e8a33d" },
                           { label: L.redemptions, data: d.daily.map(function (x) { return x.redemptions; }), borderColor: "#2e7d32", backgroundColor: "#2e7d32" }] },
        options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }
      });
      var sales = d.counties.map(function (c) { return c.sales_fen; });
      var targets = d.counties.map(function (c) { return c.target_fen; });
      chart("chart-counties", {
        type: "bar",
        data: { labels: d.counties.map(function (c) { return c.label; }),
                datasets: [{ label: L.sales, data: sales.map(wholeYuan), backgroundColor: "#2e7d32" },
                           { label: L.target, data: targets.map(wholeYuan), backgroundColor: "#9e9e9e" }] },
        options: { maintainAspectRatio: false, plugins: { tooltip: money([sales, targets]) },
                   scales: { y: { beginAtZero: true } } }
      });
      holder.setAttribute("data-ready", "1");
    })
    .catch(function (e) { holder.setAttribute("data-error", String(e)); });
})();
