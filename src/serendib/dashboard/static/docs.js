// Swagger UI for the dashboard's API, started from this file rather than an inline script
// (the page's Content-Security-Policy allows scripts from the dashboard only).
(function () {
  "use strict";

  // The token arrives as ?token=... (or was kept by the dashboard page in this tab): keep it
  // for this tab, take it out of the address bar, and send it with every request as a header.
  const query = new URLSearchParams(window.location.search);
  let token = sessionStorage.getItem("serendib-token") || "";
  if (query.has("token")) {
    token = query.get("token") || "";
    sessionStorage.setItem("serendib-token", token);
    query.delete("token");
    const rest = query.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
  }

  window.ui = window.SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis],
    // Nothing is sent elsewhere: no validator badge, no remote configuration.
    validatorUrl: null,
    requestInterceptor: function (request) {
      const sameOrigin = new URL(request.url, window.location.href).origin === window.location.origin;
      if (token && sameOrigin && !request.headers.Authorization) {
        request.headers.Authorization = "Bearer " + token;
      }
      return request;
    },
  });
})();
