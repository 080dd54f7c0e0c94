// Face and fingerprint capture screens.
//
// Face: the live preview comes over a WebSocket (/api/cases/{id}/face/stream, the session
// cookie authenticates it). Each binary message is a 4-byte length, a JSON header (the
// newest frame's guidance, and the preview's capture time on the station's clock) and the
// preview JPEG. The page answers each message once it has drawn it, and only then does
// the station send the next (the newest frame then): a slow screen skips frames, it never
// falls behind. Glass-to-glass latency (capture to drawn) is kept in
// window.kioskPreviewLatency (ms) and summarised on the section's data-latency-* attributes.
// The station checks the session and the case again while it streams; the close code says
// why it stopped: 4401 the session ended (the page says so, with a Reload button), 4404
// and 4409 the case is gone or past its captures (the page is loaded again, and shows
// where the case is).
//
// Fingers: a roll waits on the scanner; leaving the page while it waits stops the roll,
// so the scanner is free for whoever comes next (and the next page, once loaded, stops by
// its id a roll it saw left waiting, should this page's last word not have arrived).
"use strict";

(function () {
  var latencies = [];
  var parts = [];
  window.kioskPreviewLatency = latencies;
  window.kioskPreviewParts = parts;

  function percentile(values, p) {
    if (!values.length) return null;
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    var index = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
    return sorted[Math.max(0, index)];
  }

  function face(section) {
    if (section.getAttribute("data-mode") !== "live") return;
    var caseId = section.getAttribute("data-case");
    var hints = JSON.parse(section.getAttribute("data-hints") || "{}");
    var canvas = document.getElementById("face-canvas");
    var context = canvas.getContext("2d");
    var overlay = document.getElementById("face-overlay");
    var main = document.getElementById("guide-main");
    var more = document.getElementById("guide-more");
    var guide = main.parentNode;
    var problem = document.getElementById("guide-problem");
    var decoder = new TextDecoder();
    var socket = null;
    var ended = false;
    var retries = 0;
    var lastMessage = Date.now();
    var shown = null;

    function hintText(key) {
      return hints[key] || key;
    }

    function guidance(feedback) {
      var keys = feedback.hint_keys || [];
      var good = feedback.passed || (feedback.found && !keys.length);
      var signature = good ? "good" : keys.join(",");
      if (signature === shown) return; // unchanged: no new announcement
      shown = signature;
      var first = good ? section.getAttribute("data-hold") : hintText(keys[0] || "no_face");
      main.textContent = first;
      overlay.textContent = first;
      guide.classList.toggle("is-good", good);
      overlay.classList.toggle("is-good", good);
      more.textContent = "";
      if (!good) {
        keys.slice(1).forEach(function (key) {
          var item = document.createElement("li");
          item.textContent = hintText(key);
          more.appendChild(item);
        });
      }
    }

    function draw(bitmap, preview, feedback) {
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      context.drawImage(bitmap, 0, 0);
      if (bitmap.close) bitmap.close();
      // The newest analysis's face box (its frame is at most a frame or two apart).
      var box = feedback.box;
      var size = feedback.frame_size;
      if (box && size && size[0] > 0) {
        var scale = bitmap.width / size[0];
        context.lineWidth = 3;
        context.strokeStyle = feedback.passed ? "#3ad16b" : "#ffbf47";
        context.strokeRect(box[0] * scale, box[1] * scale, (box[2] - box[0]) * scale, (box[3] - box[1]) * scale);
      }
    }

    function record(ms) {
      latencies.push(ms);
      if (latencies.length > 500) latencies.shift();
      section.setAttribute("data-latency-count", String(latencies.length));
      section.setAttribute("data-latency-p50", String(Math.round(percentile(latencies, 50))));
      section.setAttribute("data-latency-p95", String(Math.round(percentile(latencies, 95))));
    }

    function ack() {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send("drawn");
    }

    function control(message) {
      if (message.type === "end") {
        ended = true;
        // The station has stored the portrait (or says why not): the page shows it.
        window.location.reload();
      }
      // "error": the close that follows says what to do (closed, below).
    }

    function loggedOut() {
      ended = true;
      problem.textContent = "";
      // The picture is frozen and Stop cannot work without a session: only the notice.
      section.classList.add("is-logged-out");
      var notice = document.getElementById("face-logged-out");
      notice.hidden = false;
      notice.querySelector("button").focus();
    }

    function closed(event) {
      if (event.code === 4401) {
        loggedOut();
        return;
      }
      if (event.code === 4404 || event.code === 4409) {
        ended = true;
        window.location.reload();
        return;
      }
      if (ended) return;
      problem.textContent = section.getAttribute("data-lost");
      retries += 1;
      // A few quick tries, then the page itself again (it shows the capture's state).
      if (retries > 5) window.location.reload();
      else window.setTimeout(connect, 300 * retries);
    }

    function frame(data) {
      var length = new DataView(data).getUint32(0);
      var header = JSON.parse(decoder.decode(new Uint8Array(data, 4, length)));
      guidance(header.feedback || {});
      if (!header.preview || data.byteLength <= 4 + length) {
        ack();
        return;
      }
      var jpeg = new Blob([new Uint8Array(data, 4 + length)], { type: "image/jpeg" });
      createImageBitmap(jpeg).then(
        function (bitmap) {
          window.requestAnimationFrame(function () {
            draw(bitmap, header.preview, header.feedback || {});
            var drawn = performance.timeOrigin + performance.now();
            record(drawn - header.preview.captured_at * 1000);
            // Where the time went: on the station (capture to sent), then here.
            parts.push([header.sent_at * 1000 - header.preview.captured_at * 1000, drawn - header.sent_at * 1000]);
            if (parts.length > 500) parts.shift();
            ack();
          });
        },
        ack
      );
    }

    function connect() {
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + window.location.host + "/api/cases/" + encodeURIComponent(caseId) + "/face/stream");
      socket.binaryType = "arraybuffer";
      socket.onmessage = function (event) {
        lastMessage = Date.now();
        retries = 0;
        problem.textContent = "";
        if (typeof event.data === "string") control(JSON.parse(event.data));
        else frame(event.data);
      };
      socket.onclose = closed;
    }

    window.setInterval(function () {
      if (!ended && Date.now() - lastMessage > 5000) {
        problem.textContent = section.getAttribute("data-stalled");
      }
    }, 1000);
    window.addEventListener("pagehide", function () {
      ended = true;
      if (socket) socket.close();
    });
    document.getElementById("face-reload").addEventListener("click", function () {
      window.location.reload();
    });
    connect();
  }

  function fingers(work) {
    var caseId = work.getAttribute("data-case");
    document.addEventListener("htmx:afterSwap", function (event) {
      if (event.detail.target !== work) return;
      // The screen moved on (next finger, or the same one again): start reading there.
      var heading = document.getElementById("current-finger");
      if (heading) heading.focus();
    });
    window.addEventListener("pagehide", function () {
      if (work.querySelector(".roll-form.htmx-request")) {
        navigator.sendBeacon("/cases/" + encodeURIComponent(caseId) + "/fingers/cancel");
      }
    });
    document.addEventListener("keydown", function (event) {
      // Escape while a roll waits: the same as pressing Cancel.
      if (event.key !== "Escape") return;
      var cancel = work.querySelector(".roll-waiting.htmx-request button");
      if (cancel) cancel.click();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var section = document.getElementById("face");
    if (section) face(section);
    var work = document.getElementById("fingers-work");
    if (work) fingers(work);
  });
})();
