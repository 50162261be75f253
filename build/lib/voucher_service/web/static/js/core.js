// Shared by every page: the CSRF token for fetch(), and small helpers. No inline scripts (CSP).
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute("content") : "";
  // fetch() for page scripts: same-origin cookies, the CSRF header, JSON answers.
  function pageFetch(url, options) {
    options = options || {};
    var headers = Object.assign({"X-Requested-With": "fetch", "Accept": "application/json"}, options.headers || {});
    var method = (options.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = token;
    return fetch(url, Object.assign({}, options, {headers: headers, credentials: "same-origin"}));
  }
  window.Pages = {csrfToken: token, fetch: pageFetch, lang: document.documentElement.lang};
})();
