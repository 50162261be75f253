// /check: scan a product barcode with the camera (a handheld scanner just types into the field).
(function () {
  "use strict";
  var startBtn = document.getElementById("scan-start");
  if (!startBtn || !window.Scanner) return;
  var box = document.getElementById("scanner");
  var video = document.getElementById("scan-video");
  var input = document.getElementById("gtin");
  var form = document.getElementById("check-form");
  var stop = null;
  if (window.Scanner.available()) startBtn.classList.remove("hidden");
  else document.getElementById("scan-unavailable").classList.remove("hidden");
  startBtn.addEventListener("click", function () {
    box.classList.remove("hidden");
    startBtn.disabled = true;
    window.Scanner.start(video, ["ean_13", "ean_8", "upc_a", "upc_e"], function (code) {
      if (stop) stop();
      input.value = code;
      form.submit();
    }).then(function (s) { stop = s; }, function () {
      box.classList.add("hidden");
      startBtn.disabled = false;
      document.getElementById("scan-unavailable").classList.remove("hidden");
    });
  });
  document.getElementById("scan-stop").addEventListener("click", function () {
    if (stop) stop();
    stop = null;
    box.classList.add("hidden");
    startBtn.disabled = false;
  });
})();
