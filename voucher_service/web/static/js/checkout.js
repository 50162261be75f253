// /checkout: read the voucher (handheld scanner = fast typing + Enter, camera, or paste), build the basket
// as typed text, and let the server read it and preview it (money is parsed there, to integer fen).
(function () {
  "use strict";
  var root = document.getElementById("checkout");
  if (!root || !window.Pages) return;
  var key = root.getAttribute("data-key");
  var storeKey = "checkout:" + key;
  var state = {token: "", lines: []};
  var voucherInput = document.getElementById("voucher");
  var voucherStatus = document.getElementById("voucher-status");
  var voucherBad = document.getElementById("voucher-bad");
  var gtin = document.getElementById("gtin");
  var qty = document.getElementById("qty");
  var price = document.getElementById("price");
  var basketBox = document.getElementById("basket");
  var redeemBtn = document.getElementById("redeem");
  var redeemForm = document.getElementById("redeem-form");
  var redeemBasket = document.getElementById("redeem-basket");
  var stopCamera = null;
  var pending = 0;

  function load() {
    var fromServer = root.getAttribute("data-basket");
    var saved = fromServer || sessionStorage.getItem(storeKey);
    if (saved) {
      try {
        var parsed = JSON.parse(saved);
        if (parsed && Array.isArray(parsed.lines)) state = {token: String(parsed.token || ""), lines: parsed.lines};
      } catch (e) { /* a damaged copy: start empty */ }
    }
    for (var i = sessionStorage.length - 1; i >= 0; i--) {  // only this checkout's basket is kept
      var k = sessionStorage.key(i);
      if (k && k.indexOf("checkout:") === 0 && k !== storeKey) sessionStorage.removeItem(k);
    }
  }

  function save() {
    var text = JSON.stringify(state);
    sessionStorage.setItem(storeKey, text);
    redeemBasket.value = text;
  }

  function showVoucher() {
    if (state.token) {
      var t = state.token;
      var label = document.getElementById("voucher-read-text").innerHTML;
      voucherStatus.textContent = label + ": " + t.slice(0, 10) + "…" + t.slice(-6);
      voucherStatus.classList.add("ok");
    } else {
      voucherStatus.textContent = "";
      voucherStatus.classList.remove("ok");
    }
  }

  function refresh() {
    save();
    var mine = ++pending;
    redeemBtn.disabled = true;
    return Pages.fetch(root.getAttribute("data-basket-url"), {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(state)
    }).then(function (resp) { return resp.json(); }).then(function (data) {
      if (mine !== pending) return;  // a newer basket is on its way
      if (typeof data.html === "string") basketBox.innerHTML = data.html;
      redeemBtn.disabled = !data.redeemable;
    });
  }

  function useVoucher(text) {
    var token = (text || "").trim();
    if (!/^V[CP]1:/i.test(token)) {  // a voucher, or a holder-bound voucher's live code
      voucherBad.classList.remove("hidden");
      voucherInput.select();
      return;
    }
    voucherBad.classList.add("hidden");
    state.token = token;
    voucherInput.value = "";
    showVoucher();
    refresh();
    gtin.focus();
  }

  document.getElementById("voucher-form").addEventListener("submit", function (ev) {
    ev.preventDefault();  // the scanner's Enter lands here: nothing leaves the page but the token
    useVoucher(voucherInput.value);
  });

  gtin.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") {  // a scanned barcode ends with Enter: go on to the price
      ev.preventDefault();
      price.focus();
    }
  });

  document.getElementById("line-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!gtin.value.trim()) { gtin.focus(); return; }
    state.lines.push({gtin: gtin.value.trim(), quantity: qty.value.trim(), price: price.value.trim()});
    gtin.value = ""; price.value = ""; qty.value = "1";
    refresh();
    gtin.focus();
  });

  basketBox.addEventListener("click", function (ev) {
    var btn = ev.target.closest ? ev.target.closest("[data-remove]") : null;
    if (!btn) return;
    state.lines.splice(parseInt(btn.getAttribute("data-remove"), 10), 1);
    refresh();
  });

  redeemForm.addEventListener("submit", function (ev) {
    if (redeemForm.getAttribute("data-sent")) { ev.preventDefault(); return; }  // a double click
    save();
    redeemForm.setAttribute("data-sent", "1");
    setTimeout(function () { redeemBtn.disabled = true; }, 0);
  });

  function camera(buttonId, boxId, videoId, formats, onCode) {
    var btn = document.getElementById(buttonId);
    var box = document.getElementById(boxId);
    if (!btn || !window.Scanner) return;
    if (window.Scanner.available()) btn.classList.remove("hidden");
    btn.addEventListener("click", function () {
      if (stopCamera) stopCamera();
      box.classList.remove("hidden");
      window.Scanner.start(document.getElementById(videoId), formats, function (code) {
        if (stopCamera) stopCamera();
        stopCamera = null;
        box.classList.add("hidden");
        onCode(code);
      }).then(function (stop) { stopCamera = stop; }, function () {
        box.classList.add("hidden");
        document.getElementById("camera-unavailable").classList.remove("hidden");
      });
    });
    box.querySelector(".scan-stop").addEventListener("click", function () {
      if (stopCamera) stopCamera();
      stopCamera = null;
      box.classList.add("hidden");
    });
  }

  camera("voucher-camera", "voucher-scanner", "voucher-video", ["qr_code"], useVoucher);
  camera("gtin-camera", "gtin-scanner", "gtin-video", ["ean_13", "ean_8", "upc_a", "upc_e"], function (code) {
    gtin.value = code;
    price.focus();
  });

  load();
  showVoucher();
  if (state.token || state.lines.length) refresh(); else save();
})();
