// Live progress for the jobs dashboard: each unfinished job on the page follows
// its events stream (GET <prefix>/<id>/events) and updates its fields in place.
// The pages are complete without this script; it only keeps them current.
"use strict";

(function () {
  const FINAL = new Set(["completed", "failed", "cancelled"]);
  // Browsers allow about six HTTP/1.1 connections per site: leave room for
  // clicks and forms, and poll the jobs beyond this many instead.
  const MAX_STREAMS = 4;
  let streams = 0;
  const waiting = [];

  function timestamp(iso) {
    if (!iso) {
      return "";
    }
    return iso.replace("T", " ").replace("Z", "").split(".")[0].split("+")[0] + " UTC";
  }

  function percentText(value) {
    return typeof value === "number" ? Math.round(value) + " %" : "";
  }

  function render(card, doc) {
    card.dataset.status = doc.status;
    for (const element of card.querySelectorAll("[data-field]")) {
      const field = element.dataset.field;
      if (field === "status") {
        element.textContent = doc.status.replace("_", " ");
        element.className = "status status-" + doc.status;
      } else if (field === "progress") {
        if (typeof doc.percentage === "number") {
          element.value = doc.percentage;
          element.textContent = percentText(doc.percentage);
        }
      } else if (field === "percentage") {
        element.textContent = percentText(doc.percentage);
      } else if (field === "items") {
        element.textContent = typeof doc.total_items === "number"
          ? (doc.items_processed || 0) + " of " + doc.total_items + " items" : "";
      } else if (field.endsWith("_at")) {
        element.textContent = timestamp(doc[field]);
        element.setAttribute("datetime", doc[field] || "");
      } else {
        element.textContent = doc[field] === undefined || doc[field] === null ? "" : String(doc[field]);
      }
    }
  }

  function finished(card) {
    if (card.dataset.reloadWhenFinished === "true") {
      // The page shows the result or error, which only the server renders.
      window.location.reload();
    }
  }

  function startNext() {
    while (streams < MAX_STREAMS && waiting.length > 0) {
      const card = waiting.shift();
      window.clearTimeout(Number(card.dataset.pollTimer));
      if (!FINAL.has(card.dataset.status)) {
        follow(card);
      }
    }
  }

  function follow(card) {
    streams += 1;
    const source = new EventSource(card.dataset.eventsUrl);
    let open = true;
    function close() {
      if (open) {
        open = false;
        source.close();
        streams -= 1;
        startNext();
      }
    }
    source.addEventListener("status", function (event) {
      const doc = JSON.parse(event.data);
      render(card, doc);
      if (FINAL.has(doc.status)) {
        close();
        finished(card);
      }
    });
    source.addEventListener("error", function () {
      // A dropped connection is retried by EventSource itself, with Last-Event-ID;
      // a refused one (403, 404, no stream route) is closed: read the job instead.
      if (source.readyState === EventSource.CLOSED) {
        close();
        poll(card);
      }
    });
  }

  function poll(card) {
    fetch(card.dataset.pollingUrl, {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        const delay = Number(response.headers.get("Retry-After")) || 5;
        return response.json().then(function (doc) {
          render(card, doc);
          if (FINAL.has(doc.status)) {
            finished(card);
          } else {
            card.dataset.pollTimer = String(window.setTimeout(poll, Math.min(delay, 60) * 1000, card));
          }
        });
      })
      .catch(function () {
        // The job is gone or the server unreachable: the page keeps what it showed.
      });
  }

  function start() {
    for (const card of document.querySelectorAll("[data-events-url]")) {
      if (FINAL.has(card.dataset.status)) {
        continue;
      }
      if (streams < MAX_STREAMS) {
        follow(card);
      } else {
        waiting.push(card);
        poll(card);
      }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
