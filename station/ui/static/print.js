// Prints the enrollment slip without leaving the kiosk. Chromium in kiosk mode cannot
// close a window that a link opens (target=_blank), so the PDF loads in an invisible
// frame of this page and is printed from there (same origin: the CSP's default-src
// 'self' allows the frame, and nothing here is inline). Without this script the link
// opens the PDF in this window; when the frame does not load or print, the page says so
// and offers that link.
"use strict";

(function () {
  var WAIT_MS = 20000;

  function show(state) {
    var said = document.getElementById("print-said");
    if (!said) return;
    said.querySelectorAll("[data-print-state]").forEach(function (el) {
      el.hidden = el.dataset.printState !== state;
    });
    said.dataset.state = state;
  }

  function frameFor(url) {
    var old = document.getElementById("print-frame");
    if (old) old.remove();
    var frame = document.createElement("iframe");
    frame.id = "print-frame";
    frame.title = "slip";
    frame.tabIndex = -1;
    frame.setAttribute("aria-hidden", "true");
    // Invisible but laid out: Chromium does not print a frame that is display:none.
    // (Set through the CSSOM, which the CSP allows; a style attribute it would block.)
    var style = frame.style;
    style.position = "fixed";
    style.right = "0";
    style.bottom = "0";
    style.width = "1px";
    style.height = "1px";
    style.border = "0";
    style.opacity = "0";
    style.pointerEvents = "none";
    frame.src = url;
    return frame;
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-print-frame]") : null;
    if (!link) return;
    event.preventDefault();
    var frame = frameFor(link.href);
    var timer = setTimeout(function () { show("failed"); }, WAIT_MS);
    frame.addEventListener("load", function () {
      clearTimeout(timer);
      try {
        frame.contentWindow.focus();
        frame.contentWindow.print();
        show("printed");
      } catch (err) {
        show("failed");
      }
    });
    show("printing");
    document.body.appendChild(frame);
  });
})();
