// The case screens' small behaviours on top of htmx.
"use strict";

(function () {
  // While the on-screen keyboard is open, a tap on a button must not move focus first:
  // the keyboard would close, the page would move up under the finger, and the tap would
  // land beside the button (the button still gets its click, and the keyboard closes as
  // the next page loads).
  document.addEventListener("pointerdown", function (event) {
    if (!document.body.classList.contains("osk-open")) return;
    var button = event.target.closest ? event.target.closest("main .btn, main button") : null;
    if (button) event.preventDefault();
  }, true);

  // The demographics form's autosave waits for a pause in typing; what was typed in the
  // last moment before a reload or a closed window goes as a beacon instead. A save of the
  // form (it deletes the draft) sends nothing; an autosave already on its way when the form
  // is saved carries the page's form_token, and the station refuses it as stale.
  var dirty = false;
  var saving = false;
  document.addEventListener("input", function (event) {
    if (event.target.form && event.target.form.id === "demographics") dirty = true;
  });
  document.addEventListener("change", function (event) {
    if (event.target.form && event.target.form.id === "demographics") dirty = true;
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt && event.detail.elt.id === "demographics") dirty = false;
  });
  document.addEventListener("submit", function (event) {
    if (event.target.id === "demographics") saving = true;
  });
  window.addEventListener("pagehide", function () {
    var form = document.getElementById("demographics");
    if (!form || !dirty || saving || !navigator.sendBeacon) return;
    navigator.sendBeacon(form.getAttribute("hx-post"), new FormData(form));
    dirty = false;
  });

  // An error summary gets focus, so the officer (and a screen reader) starts there.
  function focusSummary() {
    var summary = document.getElementById("error-summary");
    if (summary) summary.focus();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", focusSummary);
  else focusSummary();
})();
