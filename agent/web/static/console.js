// Show what the console answered when an action failed (htmx leaves 4xx/5xx answers unswapped).
document.body.addEventListener("htmx:responseError", function (evt) {
  var box = document.getElementById("error");
  box.textContent = evt.detail.xhr.responseText || ("request failed: " + evt.detail.xhr.status);
  box.hidden = false;
  window.scrollTo(0, 0);
});
