/* The inbox without a framework. Two panes on a desk (the list, the open thread), one
   on a phone (CSS). Redraws on the "textback:change" events of live.js (pushed, or
   polled when the stream cannot be held); keyboard: j/k or the arrows move in the list,
   Enter opens, Esc goes back to the list, Ctrl+Enter sends the reply, "/" in an empty
   reply box opens the saved replies. A live segment counter on the reply box. Everything
   the customer wrote is inserted with textContent, never as HTML; the list is HTML the
   server rendered and escaped. */
(function () {
  "use strict";

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT" ||
                  el.isContentEditable);
  }

  function counterFor(box, counter) {
    if (!box || !counter || !window.textbackSegments) { return function () {}; }
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
    return update;
  }

  // -- the reply box: counter, Ctrl+Enter, saved replies ---------------------------------
  var box = document.getElementById("reply-body");
  var countReply = counterFor(box, document.getElementById("reply-counter"));
  var picker = document.getElementById("saved-replies");
  var toggle = document.getElementById("saved-toggle");

  function showPicker(show, filter) {
    if (!picker) { return; }
    picker.hidden = !show;
    if (toggle) { toggle.setAttribute("aria-expanded", show ? "true" : "false"); }
    var f = (filter || "").toLowerCase();
    picker.querySelectorAll("button.saved").forEach(function (b) {
      b.parentElement.hidden = f !== "" && b.textContent.toLowerCase().indexOf(f) < 0;
    });
  }

  function firstShown() {
    var shown = Array.from(picker.querySelectorAll("li")).filter(function (li) { return !li.hidden; });
    return shown.length ? shown[0].querySelector("button") : null;
  }

  function pick(button) {
    box.value = button.dataset.body;
    showPicker(false);
    countReply();
    box.focus();
  }

  if (box) {
    box.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        box.form.requestSubmit();
      } else if (e.key === "Enter" && picker && !picker.hidden && box.value.charAt(0) === "/") {
        e.preventDefault();
        var first = firstShown();
        if (first) { pick(first); }
      } else if (e.key === "Escape") {
        if (picker && !picker.hidden) { showPicker(false); } else { box.blur(); }
        e.stopPropagation();
      }
    });
    box.addEventListener("input", function () {
      if (!picker) { return; }
      var slash = /^\/([^\n]*)$/.exec(box.value);
      showPicker(Boolean(slash), slash ? slash[1] : "");
    });
  }
  if (picker) {
    picker.addEventListener("click", function (e) {
      var button = e.target.closest("button.saved");
      if (button) { pick(button); }
    });
  }
  if (toggle) {
    toggle.addEventListener("click", function () { showPicker(picker.hidden, ""); });
  }
  document.querySelectorAll("textarea[data-counter]").forEach(function (area) {
    // saved replies (admins): rendered by the server for a sample customer, as sent
    var out = document.getElementById(area.dataset.counter);
    var timer = null;
    var token = document.querySelector("input[name=csrf_token]");
    var refresh = function () {
      var form = new FormData();
      form.append("body", area.value);
      form.append("csrf_token", token ? token.value : "");
      fetch(location.pathname.replace(/\/?$/, "") + "/preview",
            {method: "POST", body: form, credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (!d) { return; }
          out.textContent = d.error ? d.error : "As sent: “" + d.text + "” · " + d.characters +
            " characters · " + d.segments + " SMS (" + d.encoding + ")";
          out.className = "counter" + (d.error ? " multi" : "");
        });
    };
    area.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(refresh, 250); });
    if (area.value) { refresh(); }
  });

  // -- the thread: redrawn on changes ------------------------------------------------------
  var timeline = document.getElementById("timeline");
  var callbackState = document.getElementById("callback-state");

  function drawTimeline(items) {
    var atBottom = timeline.scrollTop + timeline.clientHeight >= timeline.scrollHeight - 8;
    timeline.replaceChildren();
    items.forEach(function (item) {
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
      if (item.why) {  // why it failed, as the provider said
        var why = document.createElement("span");
        why.className = "hint why";
        why.textContent = item.why;
        li.append(" ", why);
      }
      if (item.body) {
        var p = document.createElement("p");
        p.className = "body";
        p.textContent = item.body;
        li.append(p);
      }
      timeline.append(li);
    });
    if (atBottom) { timeline.scrollTop = timeline.scrollHeight; }
  }

  var threadToken = timeline ? timeline.dataset.token : null;
  var pendingTimer = null;
  function refreshThread() {
    fetch(timeline.dataset.poll, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        var button = document.getElementById("callback-button");
        if (callbackState && data.callback) {
          // the agent stopped or came back: the button says so (a desk extension needed)
          var usable = data.online && button && button.dataset.extension === "1";
          if (button && button.dataset.extension === "1") { button.disabled = !data.online; }
          if (!data.online) {
            if (button) { button.textContent = "Call back — agent offline"; }
            callbackState.textContent =
              "The agent has not reported lately: nothing would ring your desk phone.";
          } else {
            callbackState.textContent = data.callback.text;
            if (usable) {
              button.textContent = data.callback.retry ? "Retry call back" : "Call back";
            }
          }
          armPending(data.online && data.callback.pending);
        }
        if (data.token === threadToken) { return; }
        threadToken = data.token;
        drawTimeline(data.items);
      })
      .catch(function () { /* the next change tries again */ });
  }

  function armPending(pending) {
    // a call back still pending turns into "not placed" after 30 s with no row written:
    // look again then
    clearTimeout(pendingTimer);
    if (pending) { pendingTimer = setTimeout(refreshThread, 31000); }
  }

  if (timeline) {
    timeline.scrollTop = timeline.scrollHeight;
    if (callbackState) { armPending(callbackState.dataset.pending === "1"); }
  }

  // -- the list: redrawn on changes, keyboard ------------------------------------------------
  var list = document.getElementById("inbox-list");
  var listToken = list ? list.dataset.token : null;
  function refreshList() {
    fetch(list.dataset.poll, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || data.token === listToken) { return; }
        listToken = data.token;
        return fetch(list.dataset.refresh, {credentials: "same-origin"})
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) {
            if (html === null) { return; }
            var focused = document.activeElement && document.activeElement.closest &&
              document.activeElement.closest("li.conversation");
            var keep = focused ? focused.dataset.id : null;
            list.innerHTML = html;
            if (keep) {
              var again = list.querySelector('li.conversation[data-id="' + keep + '"] a.open');
              if (again) { again.focus(); }
            }
          });
      })
      .catch(function () { /* the next change tries again */ });
  }

  document.addEventListener("textback:change", function () {
    if (list) { refreshList(); }
    if (timeline) { refreshThread(); }
  });

  function links() { return Array.from(document.querySelectorAll("#inbox-list a.open")); }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target) || !list) { return; }
    var all = links();
    if (!all.length && e.key !== "Escape") { return; }
    var at = all.indexOf(document.activeElement);
    if (at < 0) {
      var current = list.querySelector("li.current a.open");
      at = current ? all.indexOf(current) : -1;
    }
    if (e.key === "j" || e.key === "ArrowDown") {
      e.preventDefault();
      all[Math.min(all.length - 1, at + 1)].focus();
    } else if (e.key === "k" || e.key === "ArrowUp") {
      e.preventDefault();
      all[Math.max(0, at - 1)].focus();
    } else if (e.key === "Escape" && timeline) {
      var back = document.getElementById("back-to-list");
      if (back) { location.href = back.href; }
    }
    // Enter on a focused link opens it: the browser's own behaviour
  });
})();
