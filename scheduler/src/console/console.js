// Gantry console: the overview's live numbers. Follows /console/overview/stream (Server-Sent
// Events) and writes each snapshot into the table. Without this script the page still works;
// it is only not live.
(function () {
  "use strict";
  if (!window.EventSource || !document.querySelector("[data-live-overview]")) return;
  var stamp = document.getElementById("live-stamp");
  function set(row, field, value) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell) cell.textContent = value;
  }
  function age(ms) {
    if (ms === null || ms === undefined) return "\u2014";
    if (ms < 1000) return ms + " ms";
    if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }
  var source = new EventSource("/console/overview/stream");
  source.addEventListener("overview", function (e) {
    var snap;
    try { snap = JSON.parse(e.data); } catch (_) { return; }
    snap.pools.forEach(function (p) {
      var workers = document.querySelector('[data-pool-workers="' + CSS.escape(p.pool) + '"]');
      if (workers) workers.textContent = p.live_workers + " live, " + p.desired_workers + " desired";
      p.queues.forEach(function (q) {
        var row = document.querySelector('tr[data-queue="' + CSS.escape(q.pool + "/" + q.kind) + '"]');
        if (!row) return;
        set(row, "high", q.waiting[0]);
        set(row, "normal", q.waiting[1]);
        set(row, "bulk", q.waiting[2]);
        set(row, "running", q.in_flight);
        set(row, "delayed", q.delayed);
        set(row, "dead", q.dead);
        set(row, "oldest", age(q.oldest_waiting_ms));
        var state = row.querySelector('[data-field="state"]');
        if (state) {
          state.textContent = q.paused ? "paused" : "running";
          state.className = q.paused ? "paused" : "";
        }
      });
    });
    if (stamp) stamp.textContent = "Live: updated " + new Date().toLocaleTimeString() + ".";
  });
  source.onerror = function () {
    if (stamp) stamp.textContent = "Live updates paused; reconnecting\u2026";
  };
})();
