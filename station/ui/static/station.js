// The kiosk's small interaction layer on top of htmx: focus after a page part changes,
// and a clear message when the station service itself cannot be reached.
"use strict";

(function () {
  function announce(html) {
    var flash = document.getElementById("flash");
    if (flash) flash.innerHTML = html;
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    // A new step swapped into the page: move focus to its heading, so a screen reader and
    // a keyboard user start there (and nothing keeps focus on a removed element).
    var target = event.detail.target;
    if (target && target.id === "main") {
      var heading = target.querySelector("h1");
      if (heading) {
        heading.setAttribute("tabindex", "-1");
        heading.focus();
      }
    }
  });

  function isPolling(elt) {
    // Requests a page makes by itself (periodic refreshes, loads) are not the officer's
    // actions: they must not wipe the message of the last action.
    var trigger = (elt && elt.getAttribute && elt.getAttribute("hx-trigger")) || "";
    return /(^|[\s,])(every|load)\b/.test(trigger);
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    // A new action clears the previous action's message.
    var flash = document.getElementById("flash");
    if (flash && event.detail.elt && !isPolling(event.detail.elt)) flash.innerHTML = "";
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    // A refusal the station words for the message area (a form it could not read: 422)
    // comes retargeted to #flash; htmx swaps no 4xx answer by itself.
    var xhr = event.detail.xhr;
    if (xhr && xhr.status >= 400 && xhr.status < 500 && xhr.getResponseHeader("HX-Retarget") === "#flash") {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:sendError", function () {
    var text = document.body.getAttribute("data-unreachable") || "";
    announce('<div class="message message-error"><p class="message-text"></p></div>');
    var p = document.querySelector("#flash .message-text");
    if (p) p.textContent = text;
  });
})();
