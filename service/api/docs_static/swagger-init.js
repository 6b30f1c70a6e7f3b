// Starts Swagger UI on /docs (service/api/docs.py): from a file, not an inline script, so the page's CSP holds.
"use strict";
const script = document.currentScript;
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: script.dataset.openapiUrl,
    dom_id: "#api-docs",
    deepLinking: true,
    validatorUrl: null, // the public validator would be a request to another origin
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
