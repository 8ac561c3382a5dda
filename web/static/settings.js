/* The settings pages without a framework: live template previews (rendered by the
   server with the agent's own functions, so they match the real text), the hours grid,
   the test-text counter, and polling of the transports panel. Server text is inserted
   with textContent; the panel is HTML the server rendered and escaped. */
(function () {
  "use strict";
  var DEBOUNCE_MS = 300;
  var POLL_MS = 5000;

  function csrfToken() {
    var input = document.querySelector("input[name=csrf_token]");
    return input ? input.value : "";
  }

  function previewOf(box) {
    var next = box.nextElementSibling;
    return next && next.classList.contains("preview") ? next : null;
  }

  function showPreview(panel, data) {
    var text = panel.querySelector(".preview-text");
    var empty = !data.text && !data.error && panel.dataset.empty;
    text.textContent = empty ? panel.dataset.empty : data.text;
    text.classList.toggle("empty", Boolean(empty));
    var counter = panel.querySelector(".counter");
    counter.textContent = data.characters + " characters · " + data.segments + " SMS (" +
      data.encoding + ")" + (data.encoding === "UCS-2" && data.units > 0 ?
      " — a character outside the GSM alphabet makes each SMS hold 70 instead of 160" : "");
    counter.className = "counter" + (data.segments > 1 ? " multi" : "");
    counter.hidden = Boolean(empty);
    var error = panel.querySelector(".preview-error");
    error.textContent = data.error || "";
    error.hidden = !data.error;
    panel.classList.toggle("invalid", Boolean(data.error));
  }

  document.querySelectorAll("textarea[data-template]").forEach(function (box) {
    var panel = previewOf(box);
    if (!panel) { return; }
    var timer = null, sent = 0;
    box.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var mine = ++sent;
        panel.classList.add("pending");
        fetch(box.dataset.previewUrl, {
          method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "Accept": "application/json",
                    "X-CSRFToken": csrfToken()},
          body: JSON.stringify({key: box.dataset.template, text: box.value,
                                step: Number(box.dataset.step || 0)})
        })
          .then(function (r) { return r.json(); })
          .then(function (data) {
            if (mine !== sent) { return; }  // an answer to older typing: a newer one comes
            panel.classList.remove("pending");
            if (data.text !== undefined) { showPreview(panel, data); }
          })
          .catch(function () { panel.classList.remove("pending"); });
      }, DEBOUNCE_MS);
    });
  });

  // the hours grid: a closed day is dimmed; typing hours into it ticks it open
  document.querySelectorAll(".hours-grid .day").forEach(function (row) {
    var open = row.querySelector("input[type=checkbox]");
    var shifts = row.querySelector("input[type=text]");
    var sync = function () { row.classList.toggle("closed", !open.checked); };
    open.addEventListener("change", sync);
    shifts.addEventListener("input", function () {
      if (shifts.value.trim() && !open.checked) { open.checked = true; sync(); }
    });
  });

  var addButton = document.getElementById("add-holiday-button");
  var addDate = document.getElementById("add-holiday");
  var holidays = document.getElementById("input-hours.holidays");
  if (addButton && addDate && holidays) {
    addButton.addEventListener("click", function () {
      if (!addDate.value) { return; }
      var lines = holidays.value.split("\n").map(function (l) { return l.trim(); })
        .filter(function (l) { return l; });
      if (lines.indexOf(addDate.value) < 0) { lines.push(addDate.value); }
      lines.sort();
      holidays.value = lines.join("\n");
      addDate.value = "";
    });
  }

  var testText = document.getElementById("test-text");
  var testCounter = document.getElementById("test-counter");
  if (testText && testCounter && window.textbackSegments) {
    var count = function () {
      var info = window.textbackSegments(testText.value.trim());
      testCounter.textContent = Array.from(testText.value.trim()).length + " characters · " +
        info.segments + " SMS (" + info.encoding + ")";
      testCounter.className = "counter" + (info.segments > 1 ? " multi" : "");
    };
    testText.addEventListener("input", count);
    count();
  }

  var panel = document.getElementById("transport-panel");
  if (panel) {
    setInterval(function () {
      if (document.hidden) { return; }
      fetch(panel.dataset.poll, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { panel.innerHTML = html; } })
        .catch(function () { /* offline for a moment: the next tick tries again */ });
    }, POLL_MS);
  }
})();
