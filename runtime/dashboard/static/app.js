// runtime dashboard: the live parts of a page, by polling its JSON twin once a second (the
// overview and queues: every 2 s) while the page is visible and its subject is not
// finished. Text only: values are written with textContent, never as HTML. No build step,
// no library.
(function () {
  "use strict";
  var PERIOD_MS = 1000;

  // the banner saying the last poll failed (Redis down, the server gone...): what the page
  // shows may be stale; cleared by the next poll that succeeds
  function stale(message) {
    var el = document.getElementById("stale");
    if (!el) { return; }
    if (message === null) {
      if (!el.hidden) { el.hidden = true; el.textContent = ""; }
      return;
    }
    el.textContent = "Live updates failed at " + new Date().toLocaleTimeString() + " (" + message +
      "): what this page shows may be out of date. Retrying…";
    el.hidden = false;
  }

  // GET url as JSON: resolves with the data of a 2xx answer, rejects with the error's text
  // (the server's {"error": ...}, or the HTTP status, or the network failure)
  function getJson(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        return r.json().catch(function () { return null; }).then(function (data) {
          if (!r.ok) { throw new Error((data && data.error) || ("HTTP " + r.status)); }
          return data;
        });
      });
  }

  // a failed poll is retried after RETRY_FACTOR periods
  var RETRY_FACTOR = 3;

  function poll(url, apply, period) {
    var every = period || PERIOD_MS;
    var timer = null;
    function tick() {
      timer = null;
      if (document.hidden) { return; }
      getJson(url)
        .then(function (data) {
          stale(null);
          if (apply(data)) { timer = setTimeout(tick, every); }
        })
        .catch(function (e) {
          stale(String(e && e.message || "no answer"));
          timer = setTimeout(tick, every * RETRY_FACTOR);
        });
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null) { tick(); }
    });
    timer = setTimeout(tick, every);
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function liveJob(el) {
    poll(el.getAttribute("data-url"), function (job) {
      setText("status", job.status);
      setText("run", job.run);
      var bar = document.getElementById("progress");
      if (bar && job.progress !== null) {
        bar.value = job.progress;
        setText("progress-pct", Math.round(job.progress * 100) + "%");
      }
      setText("progress-message", job.progress_message);
      // the tail follows new lines while the reader is at its bottom (not when scrolled up)
      var logs = document.getElementById("logs");
      var following = logs && logs.scrollHeight - logs.scrollTop - logs.clientHeight < 8;
      setText("logs", job.logs.join("\n"));
      if (following) { logs.scrollTop = logs.scrollHeight; }
      setText("stack", job.stack.join("\n"));
      if (job.final) { window.location.reload(); return false; }
      return true;
    });
  }

  function liveOperation(el) {
    poll(el.getAttribute("data-url"), function (op) {
      setText("op-state", op.state);
      setText("op-total", String(op.total));
      setText("op-done", String(op.done));
      setText("op-ok", String(op.ok));
      setText("op-skipped", String(op.skipped));
      var bar = document.getElementById("op-progress");
      if (bar) { bar.max = Math.max(op.total, 1); bar.value = op.done; }
      if (op.error) { setText("op-error", op.error); }
      setText("op-ended", op.ended);
      return op.state === "collecting" || op.state === "running";
    });
  }

  function liveList(table) {
    var FINAL = ["success", "failed", "cancel", "abort", "timeout", "maxretries"];
    function liveRows() { return table.querySelectorAll("tr.job[data-live='1']"); }
    if (liveRows().length === 0) { return; }
    function url() {
      var ids = Array.prototype.map.call(liveRows(), function (tr) { return tr.getAttribute("data-id"); });
      return table.getAttribute("data-url") + "?ids=" + encodeURIComponent(ids.join(","));
    }
    var timer = null;
    function tick() {
      timer = null;
      if (document.hidden) { return; }
      getJson(url())
        .then(function (states) {
          stale(null);
          states.forEach(function (s) {
            var tr = table.querySelector("tr.job[data-id=\"" + CSS.escape(String(s.id)) + "\"]");
            if (!tr) { return; }
            var badge = tr.querySelector("td.st span");
            if (badge && badge.textContent !== s.status) {
              badge.textContent = s.status;
              badge.className = "status status-" + s.status.replace(/[^a-z]/g, "");
            }
            var pg = tr.querySelector("td.pg");
            if (pg && s.progress !== null) { pg.textContent = Math.round(s.progress * 100) + "%"; }
            if (FINAL.indexOf(s.status) >= 0) { tr.setAttribute("data-live", "0"); }
          });
          if (liveRows().length) { timer = setTimeout(tick, PERIOD_MS); }
        })
        .catch(function (e) {
          stale(String(e && e.message || "no answer"));
          timer = setTimeout(tick, PERIOD_MS * RETRY_FACTOR);
        });
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null && liveRows().length) { tick(); }
    });
    timer = setTimeout(tick, PERIOD_MS);
  }

  // the overview's counts and the queues table, every OVERVIEW_MS while the page is visible
  var OVERVIEW_MS = 2000;

  function liveOverview(el) {
    poll(el.getAttribute("data-url"), function (o) {
      Array.prototype.forEach.call(document.querySelectorAll(".card[data-status]"), function (card) {
        var n = o.counts[card.getAttribute("data-status")];
        var el = card.querySelector(".n");
        if (el && typeof n === "number" && el.textContent !== n.toLocaleString("en-US")) {
          el.textContent = n.toLocaleString("en-US");
        }
      });
      setText("workers-alive", String(o.workers_alive));
      var rows = {};
      Array.prototype.forEach.call(document.querySelectorAll("#queues tr.queue"), function (tr) {
        rows[tr.getAttribute("data-queue")] = tr;
      });
      o.queues.forEach(function (q) {
        var tr = Object.prototype.hasOwnProperty.call(rows, q.name) ? rows[q.name] : null;
        if (!tr) { return; }
        [["q-ready", String(q.ready)], ["q-delayed", String(q.delayed)], ["q-oldest", q.oldest],
         ["q-workers", String(q.workers)], ["q-state", q.state]].forEach(function (pair) {
          var cell = tr.querySelector("." + pair[0]);
          if (cell && cell.textContent !== pair[1]) { cell.textContent = pair[1]; }
        });
      });
      return true;
    }, OVERVIEW_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var overview = document.getElementById("live-overview");
    if (overview) { liveOverview(overview); }
    var list = document.getElementById("jobs");
    if (list && list.getAttribute("data-url")) { liveList(list); }
    var job = document.getElementById("live-job");
    if (job && job.getAttribute("data-final") !== "1") {
      var logs = document.getElementById("logs");
      if (logs) { logs.scrollTop = logs.scrollHeight; }  // a live tail starts at its newest line
      liveJob(job);
    }
    var op = document.getElementById("live-operation");
    if (op && op.getAttribute("data-final") !== "1") { liveOperation(op); }
  });
}());
