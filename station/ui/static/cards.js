// The card encoding screen: while Encode waits (the chip is written, read back, verified),
// show what the encoder is doing now, polled from the station every second.
"use strict";

(function () {
  var timer = null;

  function stop() {
    if (timer !== null) {
      window.clearInterval(timer);
      timer = null;
    }
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (!form || form.id !== "encode-form") return;
    var box = document.getElementById("progress");
    var url = form.getAttribute("data-progress");
    if (!box || !url) return;
    box.hidden = false;
    stop();
    timer = window.setInterval(function () {
      if (!document.getElementById("encode-form")) return stop();
      window.htmx.ajax("GET", url, { target: "#progress", swap: "innerHTML" });
    }, 1000);
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.id === "encode-form") stop();
  });
})();
