/* Starts Swagger UI on /openapi.json (see api.html). The document's servers
 * entry names the default listen address; it is replaced by this page's own
 * origin so "Try it out" talks to the mrprov that serves the page (and stays
 * within the CSP's connect-src 'self'). The API key given to "Authorize"
 * lives in this page's memory only (persistAuthorization stays off) and is
 * sent as a header, never in a URL. */
"use strict";

(function () {
  function start(spec) {
    spec.servers = [{ url: window.location.origin, description: "The mrprov serving this page" }];
    window.ui = window.SwaggerUIBundle({
      spec: spec,
      dom_id: "#api",
      validatorUrl: null, // no request to a public validator
      displayOperationId: true,
      deepLinking: true,
      persistAuthorization: false,
      tryItOutEnabled: false
    });
  }

  function fail(message) {
    var p = document.createElement("p");
    p.className = "mrprov-error";
    p.textContent = "Could not load /openapi.json: " + message;
    document.getElementById("api").appendChild(p);
  }

  window.addEventListener("DOMContentLoaded", function () {
    fetch("/openapi.json", { credentials: "omit", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.json();
      })
      .then(start)
      .catch(function (e) { fail(String(e && e.message || e)); });
  });
})();
