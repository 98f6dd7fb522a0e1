// The alarms page: its rows refresh every few seconds (hx-trigger on #alarm-rows), but
// not while someone is writing in one of them: a refresh would replace the open form and
// lose the note being typed.
"use strict";

document.addEventListener("htmx:beforeRequest", (event) => {
  const rows = event.detail.elt;
  if (rows.id !== "alarm-rows") return;
  if (rows.querySelector("details[open]") || rows.contains(document.activeElement)) {
    event.preventDefault();
  }
});
