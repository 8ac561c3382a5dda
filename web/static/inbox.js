/* The inbox without a framework: a live segment counter on the reply box, and short
   polling (every 5 s) so new texts and status changes appear without a reload.
   Everything the customer wrote is inserted with textContent, never as HTML. */
(function () {
  "use strict";
  var POLL_MS = 5000;

  var box = document.getElementById("reply-body");
  var counter = document.getElementById("reply-counter");
  if (box && counter && window.textbackSegments) {
    var update = function () {
      var info = window.textbackSegments(box.value);
      var chars = Array.from(box.value).length;
      counter.textContent = chars + " characters · " + info.segments + " SMS (" +
        info.encoding + ")" + (info.encoding === "UCS-2" && info.units > 0 ?
        " — a character outside the GSM alphabet makes each SMS hold 70 instead of 160" : "");
      counter.className = "counter" + (info.segments > 1 ? " multi" : "");
    };
    box.addEventListener("input", update);
    update();
  }

  // the page's aria-live region (base.html): screen readers read out what lands here
  var announcer = document.getElementById("announce");
  function announce(text) {
    if (announcer) { announcer.textContent = text; }
  }

  function poll(url, onData) {
    var tick = function () {
      if (document.hidden) { return; }
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data) { onData(data); } })
        .catch(function () { /* offline for a moment: the next tick tries again */ });
    };
    setInterval(tick, POLL_MS);
  }

  var timeline = document.getElementById("timeline");
  if (timeline) {
    var last = timeline.dataset.token;  // the timeline as drawn by the server
    poll(timeline.dataset.poll, function (data) {
      if (data.token === last) { return; }
      last = data.token;
      var known = {};
      timeline.querySelectorAll("li[data-key]").forEach(function (li) {
        known[li.dataset.key] = true;
      });
      data.items.forEach(function (item) {
        if (item.side === "in" && !known[item.key]) {
          announce("New text: " + (item.body || item.label));
        }
      });
      timeline.replaceChildren();
      data.items.forEach(function (item) {
        var li = document.createElement("li");
        li.className = "item " + item.side;
        li.dataset.key = item.key;
        var label = document.createElement("span");
        label.className = "label";
        label.textContent = item.label;
        var time = document.createElement("time");
        time.dateTime = item.at;
        time.textContent = item.when;
        li.append(label, " ", time);
        if (item.status) {
          var badge = document.createElement("span");
          badge.className = "badge status-" + item.status;
          badge.textContent = item.status;
          li.append(" ", badge);
        }
        if (item.body) {
          var body = document.createElement("p");
          body.className = "body";
          body.textContent = item.body;
          li.append(body);
        }
        timeline.append(li);
      });
    });
  }

  var list = document.getElementById("inbox-list");
  if (list) {
    var token = list.dataset.token;
    poll(list.dataset.poll, function (data) {
      // "(3) Inbox": customers waiting, visible from another tab
      var before = parseInt((document.title.match(/^\((\d+)\) /) || [0, 0])[1], 10);
      if (data.waiting > before) {
        announce(data.waiting + (data.waiting === 1 ? " customer is" : " customers are") +
                 " waiting for an answer");
      }
      document.title = document.title.replace(/^\(\d+\) /, "");
      if (data.waiting > 0) { document.title = "(" + data.waiting + ") " + document.title; }
      if (data.token === token) { return; }
      token = data.token;
      // the server renders (and escapes) the list; this only swaps it in
      fetch(list.dataset.refresh, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { list.innerHTML = html; } });
    });
  }
})();
