// Holder binding (CONTRACT §10, docs/holder-binding.md). At claim (and at re-binding) this phone makes a
// non-extractable P-256 key with WebCrypto, keeps it in IndexedDB under its RFC 9679 thumbprint, and
// sends only the public JWK. A bound voucher's page then shows a live code, redrawn every 20 s:
//   "VP1:" + Base45(COSE_Sign1 [h'A10126' {1: -7}, {}, payload, signature])
//   payload = CBOR {6: now (unix s), -70201: the VC1's COSE_Sign1 bytes}
//   signature = ECDSA P-256 SHA-256 over Sig_structure ["Signature1", h'A10126', h'', payload], raw r||s
// "now" is the server's clock as the page was served plus the time since, so a phone whose own clock is
// off still makes codes the tills accept.
(function () {
  "use strict";
  var DB = "voucher-wallet", STORE = "device-keys", REDRAW_MS = 20000;
  var B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

  function canBind() { return !!(window.crypto && crypto.subtle && window.indexedDB); }

  function openDb() {
    return new Promise(function (resolve, reject) {
      var req = indexedDB.open(DB, 1);
      req.onupgradeneeded = function () { req.result.createObjectStore(STORE); };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }
  function dbCall(mode, fn) {
    return openDb().then(function (db) {
      return new Promise(function (resolve, reject) {
        var tx = db.transaction(STORE, mode);
        var req = fn(tx.objectStore(STORE));
        tx.oncomplete = function () { db.close(); resolve(req.result); };
        tx.onerror = function () { db.close(); reject(tx.error); };
      });
    });
  }

  function b64urlToBytes(text) {
    var bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function concat(parts) {
    var n = 0, i;
    for (i = 0; i < parts.length; i++) n += parts[i].length;
    var out = new Uint8Array(n), at = 0;
    for (i = 0; i < parts.length; i++) { out.set(parts[i], at); at += parts[i].length; }
    return out;
  }
  function hex(bytes) {
    return Array.prototype.map.call(new Uint8Array(bytes), function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join("");
  }
  // CBOR heads in their shortest form (RFC 8949 deterministic encoding).
  function head(major, n) {
    var m = major << 5;
    if (n < 24) return new Uint8Array([m | n]);
    if (n < 0x100) return new Uint8Array([m | 24, n]);
    if (n < 0x10000) return new Uint8Array([m | 25, n >> 8, n & 255]);
    return new Uint8Array([m | 26, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
  }
  function bstr(bytes) { return concat([head(2, bytes.length), bytes]); }

  function thumbprint(jwk) {  // RFC 9679: SHA-256 of {1: 2, -1: 1, -2: x, -3: y} in deterministic CBOR
    var x = b64urlToBytes(jwk.x), y = b64urlToBytes(jwk.y);
    var encoded = concat([new Uint8Array([0xa4, 0x01, 0x02, 0x20, 0x01, 0x21, 0x58, 0x20]), x,
                          new Uint8Array([0x22, 0x58, 0x20]), y]);
    return crypto.subtle.digest("SHA-256", encoded).then(hex);
  }

  // A new device key, stored; resolves to the public JWK (kty, crv, x, y) to send.
  function newDeviceKey() {
    return crypto.subtle.generateKey({name: "ECDSA", namedCurve: "P-256"}, false, ["sign", "verify"])
      .then(function (pair) {
        return crypto.subtle.exportKey("jwk", pair.publicKey).then(function (jwk) {
          var pub = {kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y};
          return thumbprint(pub).then(function (tp) {
            return dbCall("readwrite", function (store) {
              return store.put({privateKey: pair.privateKey, jwk: pub, created: Date.now()}, tp);
            }).then(function () { return pub; });
          });
        });
      });
  }

  function b45decode(text) {
    var out = [];
    for (var i = 0; i < text.length; i += 3) {
      var chunk = text.slice(i, i + 3), v = 0;
      for (var j = chunk.length - 1; j >= 0; j--) v = v * 45 + B45.indexOf(chunk[j]);
      if (chunk.length === 3) out.push(v >> 8, v & 255); else out.push(v);
    }
    return new Uint8Array(out);
  }
  function b45encode(bytes) {
    var out = "";
    for (var i = 0; i < bytes.length; i += 2) {
      if (i + 1 < bytes.length) {
        var v = bytes[i] * 256 + bytes[i + 1];
        out += B45[v % 45] + B45[Math.floor(v / 45) % 45] + B45[Math.floor(v / 2025)];
      } else {
        out += B45[bytes[i] % 45] + B45[Math.floor(bytes[i] / 45)];
      }
    }
    return out;
  }

  var PROTECTED = new Uint8Array([0xa1, 0x01, 0x26]);  // {1: -7}
  var SIG1 = new Uint8Array([0x84, 0x6a, 83, 105, 103, 110, 97, 116, 117, 114, 101, 49]);  // [4, "Signature1"
  var VC_LABEL = new Uint8Array([0x3a, 0x00, 0x01, 0x12, 0x38]);  // -70201

  function presentation(privateKey, token, unix) {
    var vc = b45decode(token.slice(4));
    var payload = concat([new Uint8Array([0xa2, 0x06]), head(0, unix), VC_LABEL, bstr(vc)]);
    var toSign = concat([SIG1, bstr(PROTECTED), new Uint8Array([0x40]), bstr(payload)]);
    return crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, privateKey, toSign).then(function (sig) {
      var cose = concat([new Uint8Array([0xd2, 0x84]), bstr(PROTECTED), new Uint8Array([0xa0]), bstr(payload),
                         bstr(new Uint8Array(sig))]);
      return "VP1:" + b45encode(cose);
    });
  }

  // Claim forms of programmes that bind: make the key first, then send the form with its public half.
  // An `optional` programme's voucher is claimed unbound when this browser cannot keep a key.
  function bindOnSubmit(form, onFail) {
    var optional = form.getAttribute("data-holder-binding") === "optional";
    function fail() {
      if (optional) { form.submit(); } else { onFail(); form.removeAttribute("data-sent"); }
    }
    form.addEventListener("submit", function (ev) {
      var field = form.querySelector("input[name=device_key]");
      if (!field || field.value) return;
      ev.preventDefault();
      if (!canBind()) { fail(); return; }
      newDeviceKey().then(function (jwk) {
        field.value = JSON.stringify(jwk);
        form.submit();
      }, fail);
    });
  }
  function showNoBinding() {
    var note = document.getElementById("binding-unavailable");
    if (note) note.classList.remove("hidden");
  }
  document.querySelectorAll("form[data-holder-binding]").forEach(function (form) {
    bindOnSubmit(form, showNoBinding);
  });

  // A bound voucher's page: draw its live code while this phone holds the key, else offer re-binding.
  var card = document.getElementById("voucher");
  if (!card || !card.getAttribute("data-thumbprint")) return;
  var img = document.getElementById("voucher-vp");
  var rebind = document.getElementById("rebind");
  var offsetMs = Number(card.getAttribute("data-server-now")) * 1000 - Date.now();
  var token = card.getAttribute("data-token");
  var timer = null;

  function draw(privateKey) {
    if (card.getAttribute("data-status") !== "issued") {  // used, expired or void: no code to show
      img.removeAttribute("src");
      img.classList.add("hidden");
      return;
    }
    var unix = Math.floor((Date.now() + offsetMs) / 1000);
    presentation(privateKey, token, unix).then(function (text) {
      var qr = qrcode(0, "M");
      qr.addData(text, "Alphanumeric");
      qr.make();
      img.src = qr.createDataURL(4, 16);
      img.setAttribute("data-code", text);
      img.setAttribute("data-version", String((qr.getModuleCount() - 17) / 4));
      img.classList.remove("hidden");
    });
  }
  if (rebind) bindOnSubmit(rebind.querySelector("form"), showNoBinding);
  // Used, expired or void (wallet.js polls the status): stop showing a code at once.
  new MutationObserver(function () {
    if (card.getAttribute("data-status") !== "issued") {
      clearInterval(timer);
      img.removeAttribute("src");
      img.classList.add("hidden");
    }
  }).observe(card, {attributes: true, attributeFilter: ["data-status"]});
  if (!canBind()) { showNoBinding(); return; }
  dbCall("readonly", function (store) { return store.get(card.getAttribute("data-thumbprint")); })
    .then(function (entry) {
      if (!entry) {  // bound to another phone (or this browser's data was cleared)
        img.classList.add("hidden");
        if (rebind && card.getAttribute("data-status") === "issued") rebind.classList.remove("hidden");
        return;
      }
      draw(entry.privateKey);
      timer = setInterval(function () { draw(entry.privateKey); }, REDRAW_MS);
      document.addEventListener("visibilitychange", function () { if (!document.hidden) draw(entry.privateKey); });
    });
  window.addEventListener("pagehide", function () { clearInterval(timer); });
})();
