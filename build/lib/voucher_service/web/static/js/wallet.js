// The open voucher page: its status turns to "used" within seconds of a redemption, without a reload.
// It polls a cheap endpoint (304 when unchanged) only while the page is visible and the voucher usable.
(function () {
  "use strict";
  var card = document.getElementById("voucher");
  if (!card) return;
  var url = card.getAttribute("data-status-url");
  var label = document.getElementById("voucher-status");
  var FAST_MS = 1500, SLOW_MS = 10000, SLOW_AFTER_MS = 30 * 60 * 1000;
  var opened = Date.now();
  var timer = null;
  function status() { return card.getAttribute("data-status"); }
  function schedule() {
    clearTimeout(timer);
    if (status() !== "issued" || document.hidden) return;  // final, or nobody is looking
    timer = setTimeout(poll, Date.now() - opened > SLOW_AFTER_MS ? SLOW_MS : FAST_MS);
  }
  function poll() {
    window.Pages.fetch(url, {cache: "no-cache"}).then(function (resp) {
      if (!resp.ok) throw new Error("status " + resp.status);
      return resp.json();
    }).then(function (data) {
      if (data.status !== status()) {
        card.classList.remove("status-" + status());
        card.setAttribute("data-status", data.status);
        card.classList.add("status-" + data.status);
        label.textContent = data.label;
      }
      schedule();
    }, function () { timer = setTimeout(poll, SLOW_MS); });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { opened = Date.now(); poll(); } else { clearTimeout(timer); }
  });
  schedule();
})();
