// The console's only script: live updates of an element marked data-refresh (the fleet
// table), by fetching its server-rendered HTML from this origin every data-refresh-ms.
// No framework, no other origin (the Content-Security-Policy allows 'self' only).
"use strict";
(function () {
  function poll(el) {
    var url = el.getAttribute("data-refresh");
    var every = Math.max(500, parseInt(el.getAttribute("data-refresh-ms"), 10) || 2000);
    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.redirected || !r.ok) { throw new Error("HTTP " + r.status); }
          return r.text();
        })
        .then(function (html) { el.innerHTML = html; el.removeAttribute("data-stale"); })
        .catch(function () { el.setAttribute("data-stale", "1"); })
        .finally(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(poll);
  });
})();
