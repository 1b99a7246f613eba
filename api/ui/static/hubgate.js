/* hubgate web pages: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  function units(n) {
    var u = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + u[i];
  }

  /* A request page follows its request (pending -> syncing -> available | failed | blocked) by polling
     the JSON status every second; once the request settles, the page reloads to show the full record. */
  function follow(section) {
    var url = section.getAttribute("data-live-status");
    var shown = section.getAttribute("data-state");
    var field = function (name) { return section.querySelector("[data-field=" + name + "]"); };
    var live = ["pending", "approved", "syncing"];
    if (live.indexOf(shown) < 0) { return; }
    var delay = 1000;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
        .then(function (doc) {
          var badge = field("state");
          if (badge) {
            badge.textContent = "";
            var span = document.createElement("span");
            span.className = "state state-" + doc.state;
            span.textContent = doc.state;
            badge.appendChild(span);
          }
          var bar = field("progress");
          if (bar && doc.bytes_total) { bar.max = doc.bytes_total; bar.value = doc.bytes_done; bar.hidden = false; }
          var text = field("progress-text");
          if (text) {
            var parts = doc.phase ? [doc.phase] : [];
            if (doc.files_total) {
              parts.push(doc.files_done + " of " + doc.files_total + " files", units(doc.bytes_done) + " of " + units(doc.bytes_total));
            }
            text.textContent = parts.join(" · ");
          }
          var err = field("error");
          if (err) { err.textContent = doc.error || ""; err.hidden = !doc.error; }
          section.setAttribute("data-state", doc.state);
          if (!doc.live) { window.location.reload(); return; }
          delay = 1000;
          window.setTimeout(tick, delay);
        })
        .catch(function () { delay = Math.min(delay * 2, 15000); window.setTimeout(tick, delay); });
    }
    window.setTimeout(tick, delay);
  }

  /* Copy buttons on command boxes. */
  function copyButton(pre) {
    if (!navigator.clipboard) { return; }
    var b = document.createElement("button");
    b.type = "button";
    b.className = "btn copy";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy this command");
    b.addEventListener("click", function () {
      var code = pre.querySelector("code");
      navigator.clipboard.writeText((code || pre).textContent).then(function () {
        b.textContent = "Copied";
        window.setTimeout(function () { b.textContent = "Copy"; }, 1500);
      });
    });
    pre.appendChild(b);
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-status]"), follow);
    Array.prototype.forEach.call(document.querySelectorAll("pre[data-copy]"), copyButton);
  });
}());
