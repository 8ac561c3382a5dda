/* Live updates on every signed-in page: one EventSource on /live/stream (server-sent
   events pushed by the web UI's database watcher), falling back to polling the small
   JSON endpoint while the stream cannot be held. Each change is re-dispatched as a
   "textback:change" event for the page's own script (inbox.js) to redraw; new customer
   texts and missed calls ring a short sound and raise a desktop notification (when the
   user's alerts are on and the browser allows them), also in a background tab; the tab's
   title and icon carry the number of customers waiting; a polite live region tells
   screen readers. Customer text only ever goes in as textContent. */
(function () {
  "use strict";
  var POLL_MS = 5000;
  var RETRY_STREAM_MS = 30000;
  var body = document.body;
  var streamUrl = body.dataset.live;
  if (!streamUrl) { return; }
  var alertsOn = body.dataset.alerts === "1";
  var baseTitle = document.title.replace(/^\(\d+\) /, "");
  var waiting = null;
  var source = null, pollTimer = null;
  // what the page heard, and when (read by the browser tests to time the push)
  window.textbackLive = {events: 0, lastAt: null, mode: "starting", log: []};

  function favicon(count) {
    var canvas = document.createElement("canvas");
    canvas.width = canvas.height = 32;
    var ctx = canvas.getContext("2d");
    if (!ctx) { return; }
    ctx.fillStyle = "#1f6feb";
    ctx.beginPath(); ctx.arc(16, 16, 15, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#fff"; ctx.font = "bold 18px sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(count > 0 ? (count > 99 ? "99" : String(count)) : "t", 16, 17);
    if (count > 0) {
      ctx.fillStyle = "#b42318";
      ctx.beginPath(); ctx.arc(26, 6, 6, 0, 2 * Math.PI); ctx.fill();
    }
    var link = document.querySelector("link[rel=icon]");
    if (!link) {
      link = document.createElement("link");
      link.rel = "icon";
      document.head.append(link);
    }
    link.href = canvas.toDataURL("image/png");
  }

  function setWaiting(count) {
    if (typeof count !== "number" || count === waiting) { return; }
    waiting = count;
    document.title = (count > 0 ? "(" + count + ") " : "") + baseTitle;
    favicon(count);
  }

  var audio = null;
  function beep() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.15;
      osc.connect(gain); gain.connect(audio.destination);
      osc.start(); osc.stop(audio.currentTime + 0.18);
    } catch (e) { /* no sound before the first click (autoplay rules): the rest still alerts */ }
  }

  function announce(text) {
    var region = document.getElementById("announce");
    if (region) { region.textContent = text; }
  }

  function alertOf(a) {
    var title = a.kind === "call" ? "Missed call from " + a.who : "New text from " + a.who;
    announce(title + (a.kind === "text" ? ": " + a.body : ""));
    if (!alertsOn) { return; }
    beep();
    if (window.Notification && Notification.permission === "granted") {
      try {
        var note = new Notification(title, {body: a.kind === "text" ? a.body : a.number,
                                            tag: "textback-" + (a.contact || a.number)});
        note.onclick = function () {
          window.focus();
          if (a.contact) { location.href = body.dataset.inbox + "/" + a.contact; }
        };
      } catch (e) { /* some browsers allow notifications from a service worker only */ }
    }
  }

  function handle(data) {
    window.textbackLive.events += 1;
    window.textbackLive.lastAt = Date.now();
    window.textbackLive.log.push({at: window.textbackLive.lastAt, alerts: data.alerts || []});
    if (window.textbackLive.log.length > 200) { window.textbackLive.log.shift(); }
    var before = waiting;
    setWaiting(data.waiting);
    (data.alerts || []).forEach(alertOf);
    if (data.polled && before !== null && data.waiting > before) {
      alertOf({kind: "text", who: "a customer", body: "A customer is waiting.", number: ""});
    }
    document.dispatchEvent(new CustomEvent("textback:change", {detail: data}));
  }

  function pollOnce() {
    fetch(body.dataset.poll, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data) { handle({waiting: data.waiting, alerts: [], polled: true}); }
      })
      .catch(function () { /* offline for a moment: the next tick tries again */ });
  }

  function startPolling() {
    window.textbackLive.mode = "polling";
    if (pollTimer === null) { pollTimer = setInterval(pollOnce, POLL_MS); }
  }

  function stopPolling() {
    window.textbackLive.mode = "stream";
    if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; }
  }

  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    source = new EventSource(streamUrl);
    source.addEventListener("change", function (e) {
      stopPolling();
      var data = JSON.parse(e.data);
      if (data.hello) {
        setWaiting(data.waiting);
        document.dispatchEvent(new CustomEvent("textback:change", {detail: data}));
      } else { handle(data); }
    });
    source.onerror = function () {
      // a restart of the web UI: EventSource retries by itself; refused (503, too many
      // open pages) or gone for good: poll, and try the stream again later
      startPolling();
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connect, RETRY_STREAM_MS);
      }
    };
  }

  var ask = document.getElementById("ask-notifications");
  if (ask && window.Notification && Notification.permission === "default" && alertsOn) {
    ask.hidden = false;
    ask.addEventListener("click", function () {
      Notification.requestPermission().then(function () { ask.hidden = true; });
    });
  }
  var match = /^\((\d+)\) /.exec(document.title);
  setWaiting(match ? Number(match[1]) : 0);
  connect();
})();
