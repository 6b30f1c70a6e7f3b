// Starts ReDoc on /redoc (service/api/docs.py). ReDoc inserts <style> elements: it gives them this response's nonce,
// the only style source the CSP allows besides this origin's files. Search would start a worker from a blob: URL,
// which the CSP forbids: it is off.
"use strict";
const script = document.currentScript;
window.addEventListener("DOMContentLoaded", () => {
  window.Redoc.init(script.dataset.openapiUrl, { nonce: script.dataset.nonce, disableSearch: true }, document.getElementById("api-docs"));
});
