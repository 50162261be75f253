// Camera scanning for every page: the browser's BarcodeDetector, or the barcode-detector polyfill
// (ZXing WebAssembly, served by this app: /static/vendor/). Load vendor/barcode-detector/ponyfill.js first.
// Scanner.start(video, formats, onCode) -> Promise<stop()>; rejects when no camera can be used.
(function () {
  "use strict";
  var WASM = "/static/vendor/zxing-wasm/zxing_reader.wasm";
  var prepared = false;

  function detectorClass() {
    if ("BarcodeDetector" in window) return window.BarcodeDetector;
    var api = window.BarcodeDetectionAPI;
    if (!api) return null;
    if (!prepared && api.prepareZXingModule) {
      api.prepareZXingModule({
        overrides: {locateFile: function (path, prefix) { return path.endsWith(".wasm") ? WASM : prefix + path; }}
      });
      prepared = true;
    }
    return api.BarcodeDetector;
  }

  function available() {
    return !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && detectorClass());
  }

  function start(video, formats, onCode) {
    var Detector = detectorClass();
    if (!Detector || !navigator.mediaDevices) return Promise.reject(new Error("no camera scanning"));
    var detector = new Detector({formats: formats});
    var stopped = false;
    var stream = null;
    var last = "";
    function stop() {
      stopped = true;
      if (stream) stream.getTracks().forEach(function (t) { t.stop(); });
      video.srcObject = null;
    }
    function tick() {
      if (stopped) return;
      if (video.readyState < 2) { setTimeout(tick, 150); return; }
      detector.detect(video).then(function (codes) {
        if (stopped) return;
        if (codes.length && codes[0].rawValue && codes[0].rawValue !== last) {
          last = codes[0].rawValue;
          onCode(last, codes[0].format);
        }
        setTimeout(tick, 200);
      }, function () { setTimeout(tick, 400); });
    }
    return navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}, audio: false})
      .then(function (s) {
        stream = s;
        video.srcObject = s;
        return video.play();
      })
      .then(function () { tick(); return stop; });
  }

  window.Scanner = {available: available, start: start, detectorClass: detectorClass};
})();
