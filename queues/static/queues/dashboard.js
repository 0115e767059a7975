// Refreshes the dashboard's figures in place: fetches the page again and swaps the live part, so a
// half-typed pause reason or an open form is never lost (no refresh while focus is inside the part).
(function () {
  "use strict";
  var live = document.getElementById("slimy-live");
  var toggle = document.getElementById("slimy-autorefresh");
  var stamp = document.getElementById("slimy-refreshed");
  if (!live || !toggle || !window.fetch || !window.DOMParser) return;
  var seconds = parseInt(live.getAttribute("data-refresh-seconds"), 10) || 10;
  // The dashboard's own address: after a form error this page was rendered by a POST-only URL.
  var url = live.getAttribute("data-url") || window.location.href;

  function refresh() {
    if (!toggle.checked || document.hidden || live.contains(document.activeElement)) return;
    fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("slimy-live");
        if (!fresh || live.contains(document.activeElement)) return;
        live.innerHTML = fresh.innerHTML;
        if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { if (stamp) stamp.textContent = "refresh failed; retrying"; });
  }
  window.setInterval(refresh, seconds * 1000);
})();
