// Starts Swagger UI on /docs; kept out of the page so the CSP needs no inline script.
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // never ask an outside validator about our document
    persistAuthorization: true, // a token pasted in "Authorize" survives reloading the page
  });
})();
