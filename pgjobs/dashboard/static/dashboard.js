// pgjobs dashboard: refresh the page's content in place every few seconds.
// The server renders (and escapes) everything; this only swaps fresh server HTML in.
(function () {
  "use strict";
  var seconds = parseFloat(document.body.getAttribute("data-refresh")) || 0;
  var button = document.getElementById("toggle-refresh");
  var paused = false;
  if (button) {
    button.addEventListener("click", function () {
      paused = !paused;
      button.textContent = paused ? "resume" : "pause";
    });
  }
  function busy() {
    var active = document.activeElement;
    if (active && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(active.tagName) && active !== button) {
      return true;
    }
    var selection = window.getSelection && window.getSelection();
    return !!(selection && String(selection).length);
  }
  function swap(fresh, id) {
    var next = fresh.getElementById(id);
    var current = document.getElementById(id);
    if (next && current) {
      current.replaceWith(document.importNode(next, true));
    }
  }
  function refresh() {
    if (paused || busy() || document.hidden) {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok) { throw new Error(String(response.status)); }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        swap(fresh, "content");
        swap(fresh, "summary");
        swap(fresh, "updated");
        document.body.classList.remove("stale");
      })
      .catch(function () { document.body.classList.add("stale"); });
  }
  if (seconds > 0) {
    window.setInterval(refresh, seconds * 1000);
  }
})();
