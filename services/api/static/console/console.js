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

// What went wrong with a request, said at the foot of the page: a live refresh that failed
// is tried again and its notice goes away; a write that was refused stays said, with the
// server's reason, until clicked away (the operator must not think it was done).
function banner(text, lasting = false) {
  let node = document.getElementById("banner");
  if (!node) {
    node = document.createElement("div");
    node.id = "banner";
    node.className = "banner";
    node.setAttribute("role", "alert");
    node.addEventListener("click", () => node.remove());
    document.body.appendChild(node);
  }
  node.textContent = text;
  clearTimeout(node.hideTimer);
  if (!lasting) node.hideTimer = setTimeout(() => node.remove(), 8000);
}

// The reason on the console's error page (error.html), if the answer is one.
function problemOf(xhr) {
  const type = xhr.getResponseHeader("Content-Type") || "";
  if (!type.startsWith("text/html")) return "";
  const page = new DOMParser().parseFromString(xhr.responseText, "text/html");
  return page.querySelector("section.problem p")?.textContent.trim() || "";
}

// A 409 or 422 is swapped in (base.html's htmx-config) when it is a form with its errors;
// the error page instead (a refusal the route did not answer with its form) would land
// inside the part that asked: it is said as the other errors are.
document.addEventListener("htmx:beforeSwap", (event) => {
  const detail = event.detail;
  if (detail.xhr.status >= 400 && detail.shouldSwap && problemOf(detail.xhr)) {
    detail.shouldSwap = false;
    detail.isError = true;
  }
});

document.addEventListener("htmx:sendError", () => banner("The platform did not answer; retrying."));
// Any 4xx or 5xx not swapped in. An ended session is not one: it answers 200 with
// HX-Redirect, to the login page and back.
document.addEventListener("htmx:responseError", (event) => {
  const { xhr, requestConfig } = event.detail;
  const status = xhr.status;
  const reading = (requestConfig?.verb || "get") === "get";
  if (status >= 500 && reading) {
    banner(`The platform answered ${status}; retrying.`);
    return;
  }
  const reason = problemOf(xhr) || xhr.statusText;
  banner(`${reading ? "Could not load" : "Not done"} (${status}): ${reason}`, !reading);
});
