// Gantry console: the live parts of its pages. Without this script every page still works;
// it is only not live.
//  - The overview follows /console/overview/stream (Server-Sent Events) and writes each
//    snapshot into its tables.
//  - A job's page follows /console/jobs/{id}/stream and writes the job's status, attempts and
//    progress; when the job ends it reloads once, to show the whole history.
(function () {
  "use strict";
  if (!window.EventSource) return;
  var stamp = document.getElementById("live-stamp");
  function stamped() {
    if (stamp) stamp.textContent = "Live: updated " + new Date().toLocaleTimeString() + ".";
  }
  function paused(source) {
    source.onerror = function () {
      if (stamp) stamp.textContent = "Live updates paused; reconnecting\u2026";
    };
  }
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

  if (document.querySelector("[data-live-overview]")) {
    var rendered = stamp ? Number(stamp.getAttribute("data-rendered-ms") || 0) : 0;
    var overview = new EventSource("/console/overview/stream");
    overview.onopen = function () {
      if (stamp) stamp.textContent = "Live: following changes.";
    };
    overview.addEventListener("overview", function (e) {
      var snap;
      try { snap = JSON.parse(e.data); } catch (_) { return; }
      // Read before this page was: its own numbers are newer.
      if (snap.at_ms < rendered) return;
      snap.pools.forEach(function (p) {
        var workers = document.querySelector('[data-pool-workers="' + CSS.escape(p.pool) + '"]');
        if (workers) workers.textContent = p.live_workers + " live, " + p.desired_workers + " desired";
        var hour = document.querySelector('[data-pool-hour="' + CSS.escape(p.pool) + '"]');
        if (hour) hour.textContent = p.last_hour;
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
      stamped();
    });
    paused(overview);
  }

  var job = document.querySelector("[data-live-job]");
  if (job) {
    var loaded = job.getAttribute("data-status");
    var ended = ["succeeded", "dead", "cancelled", "blocked"];
    var source = new EventSource("/console/jobs/" + encodeURIComponent(job.getAttribute("data-live-job")) + "/stream");
    source.addEventListener("job", function (e) {
      var j;
      try { j = JSON.parse(e.data); } catch (_) { return; }
      var status = document.getElementById("job-status");
      if (status) status.textContent = j.status;
      var attempts = document.getElementById("job-attempts");
      if (attempts) attempts.textContent = j.attempts;
      var progress = document.getElementById("job-progress");
      if (progress) progress.textContent = j.progress || "\u2014";
      stamped();
      if (j.status !== loaded && ended.indexOf(j.status) >= 0) {
        source.close();
        // Once, shortly: the page as it now is (history, result, actions).
        setTimeout(function () { window.location.reload(); }, 1500);
      }
    });
    paused(source);
  }
})();
