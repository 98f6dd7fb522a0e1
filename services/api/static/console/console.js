// The console's own script: what htmx does not do by itself. No inline code anywhere
// (the pages' CSP allows scripts from this origin only).
"use strict";

// Live refreshes ("every Ns" triggers) wait while the tab is hidden: nothing to show.
document.addEventListener("htmx:beforeRequest", (event) => {
  const trigger = event.detail.elt.getAttribute("hx-trigger") || "";
  if (document.hidden && trigger.startsWith("every")) event.preventDefault();
});

// A filter form's empty fields stay out of the request and of the address bar.
document.addEventListener("htmx:configRequest", (event) => {
  if (event.detail.verb !== "get" || !event.detail.formData) return;
  for (const [name, value] of Array.from(event.detail.formData.entries())) {
    if (value === "") event.detail.formData.delete(name);
  }
});

// A request that failed outright (the API restarting, the network gone) says so once.
function banner(text) {
  let node = document.getElementById("banner");
  if (!node) {
    node = document.createElement("div");
    node.id = "banner";
    node.className = "banner";
    node.setAttribute("role", "status");
    document.body.appendChild(node);
  }
  node.textContent = text;
  clearTimeout(node.hideTimer);
  node.hideTimer = setTimeout(() => node.remove(), 8000);
}
document.addEventListener("htmx:sendError", () => banner("The platform did not answer; retrying."));
document.addEventListener("htmx:responseError", (event) => {
  const status = event.detail.xhr.status;
  if (status >= 500) banner(`The platform answered ${status}; retrying.`);
});
