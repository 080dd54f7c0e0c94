// The kiosk's on-screen keyboard: the officers' touchscreen has no keyboard most of the
// time.
//
// Contract for every screen (put the attribute on the input or textarea):
//   data-osk="vi"      Vietnamese text (names, addresses): letters, digits, a Telex / VNI /
//                      off switch; Telex or VNI composes as one types, on the screen keys and
//                      on a physical keyboard alike. The method is remembered per browser
//                      (localStorage "station.osk.mode"; Telex by default).
//   data-osk="latin"   plain letters and digits (IDs, passwords); a "123" key opens the pad.
//   data-osk="digits"  a large numeric pad (PINs, dates, phone and ID numbers).
// The keyboard opens when such a field gets focus and closes when focus leaves for a field
// without the attribute, on its hide key, or on Escape (then it stays closed for physical
// keyboard users until a field is touched again). Each key tap changes the value at the
// caret and dispatches a bubbling `input` event (an InputEvent with inputType and data),
// so htmx triggers on `input` (hx-trigger="input changed delay:300ms") fire as for a
// physical keyboard; `keyup` triggers do NOT fire: use `input`. A `change` event follows
// when focus leaves a field the keyboard changed. Enter moves to the next field of the
// form, or submits the form (requestSubmit: htmx's hx-post runs) from its last field.
// maxlength is respected. The keys never take focus: the field keeps it throughout.
// All visible words come from the template (data-label-* attributes), none from here.
"use strict";

(function () {
  var STORE = "station.osk.mode";
  var LETTER_ROWS = ["1234567890", "qwertyuiop", "asdfghjkl'", "zxcvbnm,."];
  var PAD_ROWS = [["1", "2", "3", "backspace"], ["4", "5", "6", "/"], ["7", "8", "9", "-"], ["letters", "0", "hide", "enter"]];
  var SYMBOLS = { "'": "apostrophe", ",": "comma", ".": "period", "/": "slash", "-": "hyphen", "@": "at", "_": "underscore" };

  var osk = null;
  var keys = null;
  var field = null; // the field being typed into
  var layout = ""; // "letters" or "pad"
  var shift = 0; // 0 off, 1 next letter, 2 caps lock
  var suppressed = false; // hidden by the officer with a physical keyboard
  var changed = false; // the keyboard changed the field since it got focus
  var pointerDown = false; // a finger (or mouse button) is down on the page
  var closeAfterPointer = false;

  function label(name) {
    return osk.getAttribute("data-label-" + name) || name;
  }

  function mode() {
    var value = null;
    try {
      value = window.localStorage.getItem(STORE);
    } catch (e) {
      value = null; // storage disabled: Telex for this page
    }
    return window.VietIME.MODES.indexOf(value) >= 0 ? value : "telex";
  }

  function setMode(value) {
    try {
      window.localStorage.setItem(STORE, value);
    } catch (e) {
      // storage disabled: the choice lasts until the page changes
    }
    var buttons = osk.querySelectorAll("[data-mode]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].setAttribute("aria-pressed", buttons[i].getAttribute("data-mode") === value ? "true" : "false");
    }
    osk.setAttribute("data-mode", value);
  }

  function kind(el) {
    return el && el.getAttribute ? el.getAttribute("data-osk") : null;
  }

  function usable(el) {
    return !!kind(el) && !el.disabled && !el.readOnly;
  }

  // ---- editing the field ----

  function caret(el) {
    try {
      if (typeof el.selectionStart === "number") return [el.selectionStart, el.selectionEnd];
    } catch (e) {
      // type=number, email... have no selection API: type at the end
    }
    return [el.value.length, el.value.length];
  }

  function setCaret(el, at) {
    try {
      el.setSelectionRange(at, at);
    } catch (e) {
      // no selection API (see caret)
    }
  }

  function fire(el, inputType, data) {
    changed = true;
    el.dispatchEvent(new InputEvent("input", { bubbles: true, inputType: inputType, data: data }));
  }

  // Type ``key`` into ``el`` at the caret, composing Vietnamese in a vi field. True when the
  // value changed.
  function typeInto(el, key) {
    var sel = caret(el);
    var value = el.value;
    var before = value.slice(0, sel[0]);
    var after = value.slice(sel[1]);
    var current = mode();
    if (kind(el) === "vi" && current !== "off" && window.VietIME.composes(key, current) && sel[0] === sel[1]) {
      var match = /\p{L}+$/u.exec(before);
      var word = match ? match[0] : "";
      before = before.slice(0, before.length - word.length) + window.VietIME.type(word, key, current);
    } else {
      before += key;
    }
    var next = before + after;
    if (el.maxLength >= 0 && next.length > el.maxLength && next.length > value.length) return false;
    el.value = next;
    setCaret(el, before.length);
    fire(el, "insertText", key);
    return true;
  }

  function backspace(el) {
    var sel = caret(el);
    var value = el.value;
    if (sel[0] === sel[1]) {
      if (sel[0] === 0) return;
      // one user-perceived character (a letter and its combining marks, if any)
      var chars = Array.from(value.slice(0, sel[0]));
      var last = chars.pop() || "";
      while (chars.length && /\p{M}/u.test(last)) last = chars.pop() + last;
      sel = [sel[0] - last.length, sel[1]];
    }
    el.value = value.slice(0, sel[0]) + value.slice(sel[1]);
    setCaret(el, sel[0]);
    fire(el, "deleteContentBackward", null);
  }

  function fields(form) {
    var out = [];
    var all = form.elements;
    for (var i = 0; i < all.length; i++) {
      var el = all[i];
      var tag = el.tagName;
      if ((tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") && el.type !== "hidden" &&
          !el.disabled && !el.readOnly && el.getClientRects().length) {
        out.push(el);
      }
    }
    return out;
  }

  function nextField(el) {
    if (!el.form) return null;
    var list = fields(el.form);
    var at = list.indexOf(el);
    for (var i = at + 1; i < list.length; i++) {
      if (list[i].type !== "submit" && list[i].type !== "button") return list[i];
    }
    return null;
  }

  function enter(el) {
    if (el.tagName === "TEXTAREA") {
      typeInto(el, "\n");
      return;
    }
    var next = nextField(el);
    if (next) {
      next.focus();
      return;
    }
    if (el.form) {
      el.blur();
      hide();
      if (typeof el.form.requestSubmit === "function") el.form.requestSubmit();
      else el.form.submit();
    } else {
      hide();
    }
  }

  // ---- the keys ----

  function button(text, action, wide) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "osk-key" + (wide ? " osk-" + wide : "");
    b.tabIndex = -1; // never in the Tab order: a physical keyboard user tabs between fields
    b.textContent = text;
    b.setAttribute("data-key", action);
    var symbol = SYMBOLS[action];
    if (symbol) b.setAttribute("aria-label", label(symbol));
    return b;
  }

  function special(name, text) {
    var b = button(text || label(name), name, name);
    b.setAttribute("aria-label", label(name));
    return b;
  }

  function row(list) {
    var r = document.createElement("div");
    r.className = "osk-row";
    for (var i = 0; i < list.length; i++) r.appendChild(list[i]);
    return r;
  }

  function letterKeys(vi) {
    var rows = [];
    for (var i = 0; i < LETTER_ROWS.length; i++) {
      var list = [];
      var chars = LETTER_ROWS[i].split("");
      for (var j = 0; j < chars.length; j++) list.push(button(chars[j], chars[j]));
      if (i === 3) {
        list.unshift(special("shift", "⇧"));
        list.push(special("backspace", "⌫"));
      }
      rows.push(row(list));
    }
    var last = [];
    if (vi) {
      var group = document.createElement("div");
      group.className = "osk-modes";
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", label("method"));
      window.VietIME.MODES.forEach(function (m) {
        var b = button(label(m), "mode-" + m, "mode");
        b.setAttribute("data-mode", m);
        group.appendChild(b);
      });
      last.push(group);
    } else {
      last.push(special("digits", "123"));
    }
    last.push(special("space"));
    ["/", "-"].concat(vi ? [] : ["@", "_"]).forEach(function (c) {
      last.push(button(c, c));
    });
    last.push(special("hide"));
    last.push(special("enter"));
    rows.push(row(last));
    return rows;
  }

  function padKeys(back) {
    var rows = [];
    for (var i = 0; i < PAD_ROWS.length; i++) {
      var list = [];
      for (var j = 0; j < PAD_ROWS[i].length; j++) {
        var k = PAD_ROWS[i][j];
        if (k === "letters" && !back) {
          var blank = document.createElement("span");
          blank.className = "osk-blank";
          list.push(blank);
        } else if (k === "backspace") list.push(special(k, "⌫"));
        else if (k === "letters") list.push(special(k, "ABC"));
        else if (k.length > 1) list.push(special(k));
        else list.push(button(k, k));
      }
      rows.push(row(list));
    }
    return rows;
  }

  function build(which) {
    layout = which;
    keys.textContent = "";
    var f = kind(field);
    var rows = which === "pad" ? padKeys(f !== "digits") : letterKeys(f === "vi");
    for (var i = 0; i < rows.length; i++) keys.appendChild(rows[i]);
    osk.setAttribute("data-layout", which);
    osk.setAttribute("data-field", f || "");
    if (f === "vi") setMode(mode());
    shift = 0;
    paintShift();
    paintEnter();
  }

  function paintShift() {
    var upper = shift > 0;
    var letters = keys.querySelectorAll("[data-key]");
    for (var i = 0; i < letters.length; i++) {
      var k = letters[i].getAttribute("data-key");
      if (k.length === 1 && /\p{L}/u.test(k)) letters[i].textContent = upper ? k.toUpperCase() : k;
    }
    var s = keys.querySelector("[data-key=shift]");
    if (s) {
      s.setAttribute("aria-pressed", upper ? "true" : "false");
      s.classList.toggle("is-locked", shift === 2);
    }
  }

  function paintEnter() {
    var b = keys.querySelector("[data-key=enter]");
    if (!b || !field) return;
    var next = field.tagName !== "TEXTAREA" && nextField(field);
    var name = next ? "next" : "enter";
    b.textContent = label(name);
    b.setAttribute("aria-label", label(name));
  }

  function press(action) {
    if (!field || !field.isConnected) {
      // the field was swapped out of the page (htmx) while the keys were open
      hide();
      field = null;
      return;
    }
    if (action === "hide") {
      suppressed = true;
      hide();
    } else if (action === "enter") {
      enter(field);
    } else if (action === "backspace") {
      backspace(field);
    } else if (action === "shift") {
      shift = (shift + 1) % 3;
      paintShift();
    } else if (action === "digits") {
      build("pad");
    } else if (action === "letters") {
      build("letters");
    } else if (action.indexOf("mode-") === 0) {
      setMode(action.slice(5));
    } else {
      var key = action === "space" ? " " : action;
      if (shift) key = key.toUpperCase();
      typeInto(field, key);
      if (shift === 1) {
        shift = 0;
        paintShift();
      }
    }
  }

  // ---- showing and hiding ----

  // Keep the field in sight above the keyboard (800x480: the keyboard takes half).
  function reveal() {
    if (!field || osk.hidden) return;
    var height = osk.offsetHeight;
    document.documentElement.style.setProperty("--osk-height", height + "px");
    var box = field.getBoundingClientRect();
    var limit = window.innerHeight - height - 8;
    if (box.bottom > limit) window.scrollBy(0, box.bottom - limit);
    else if (box.top < 0) window.scrollBy(0, box.top - 8);
  }

  function show(el) {
    field = el;
    var f = kind(el);
    build(f === "digits" ? "pad" : "letters");
    osk.hidden = false;
    document.body.classList.add("osk-open");
    reveal();
  }

  function hide() {
    if (!osk || osk.hidden) return;
    osk.hidden = true;
    document.body.classList.remove("osk-open");
    document.documentElement.style.removeProperty("--osk-height");
  }

  // Focus left the fields: close, but not under a finger still pressing a button (closing
  // shifts the page, and the button would move away before the finger lifts: no click).
  function closeSoon() {
    if (pointerDown) {
      closeAfterPointer = true;
      return;
    }
    var active = document.activeElement;
    if (!usable(active) && !osk.contains(active)) {
      hide();
      field = null;
    }
  }

  function init() {
    osk = document.getElementById("osk");
    if (!osk || !window.VietIME) return;
    keys = osk.querySelector(".osk-keys");

    // A tap on a key must not move focus out of the field.
    ["pointerdown", "mousedown"].forEach(function (name) {
      osk.addEventListener(name, function (event) {
        event.preventDefault();
      });
    });
    osk.addEventListener("click", function (event) {
      var b = event.target.closest ? event.target.closest("[data-key]") : null;
      if (b) press(b.getAttribute("data-key"));
    });

    document.addEventListener("pointerdown", function (event) {
      var el = event.target;
      pointerDown = true;
      if (!usable(el)) return;
      suppressed = false; // a touch on a field: the officer wants keys
      if (el === document.activeElement && osk.hidden) show(el); // hidden, field kept focus
    }, true);

    ["pointerup", "pointercancel"].forEach(function (name) {
      document.addEventListener(name, function () {
        pointerDown = false;
        if (closeAfterPointer) {
          closeAfterPointer = false;
          window.setTimeout(closeSoon, 0); // after the click this pointer makes
        }
      }, true);
    });

    document.addEventListener("focusin", function (event) {
      var el = event.target;
      if (el === field && !osk.hidden) return;
      if (el !== field) changed = false;
      if (usable(el)) {
        if (suppressed) {
          field = el;
        } else {
          show(el);
        }
      } else if (!osk.contains(el)) {
        closeSoon();
      }
    });

    document.addEventListener("focusout", function (event) {
      var el = event.target;
      if (el === field && changed) {
        changed = false;
        el.dispatchEvent(new Event("change", { bubbles: true }));
      }
      // focus gone nowhere (a click on the page's background): close after this event
      window.setTimeout(closeSoon, 0);
    });

    // Physical keyboards: Escape hides the keys; Telex / VNI compose in vi fields.
    document.addEventListener("keydown", function (event) {
      var el = event.target;
      if (!usable(el)) return;
      if (event.key === "Escape" && !osk.hidden) {
        suppressed = true;
        hide();
        return;
      }
      if (kind(el) !== "vi" || event.isComposing || event.ctrlKey || event.altKey || event.metaKey) return;
      var current = mode();
      if (event.key.length !== 1 || current === "off" || !window.VietIME.composes(event.key, current)) return;
      event.preventDefault();
      typeInto(el, event.key);
    });

    window.addEventListener("resize", reveal);

    // A field focused before this script ran (autofocus).
    if (usable(document.activeElement)) show(document.activeElement);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
