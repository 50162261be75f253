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
  // Forms of class "once" are sent once: their buttons are disabled as soon as one is submitted
  // (the server also refuses a second submission of the same form).
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("once")) return;
    if (form.getAttribute("data-sent")) { ev.preventDefault(); return; }
    form.setAttribute("data-sent", "1");
    setTimeout(function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }, 0);
  });
  window.Pages = {csrfToken: token, fetch: pageFetch, lang: document.documentElement.lang};
})();
