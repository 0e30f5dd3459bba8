// Show what the console answered when an action failed (htmx leaves 4xx/5xx answers unswapped): a warning
// next to the form that asked, or at the top of the page.
document.body.addEventListener("htmx:responseError", function (evt) {
  var text = evt.detail.xhr.responseText || ("the request failed: " + evt.detail.xhr.status);
  var box = document.getElementById("error");
  box.textContent = text;
  box.hidden = false;
  var card = evt.detail.elt && evt.detail.elt.closest && evt.detail.elt.closest(".visit, .cluster");
  if (card) {
    var note = card.querySelector(".card-error") || document.createElement("p");
    note.className = "warning card-error";
    note.setAttribute("role", "alert");
    note.textContent = text;
    card.appendChild(note);
  } else {
    window.scrollTo(0, 0);
  }
});

// Times: the pages carry UTC (<time datetime="...Z">); show them in the browser's time zone.
function localTimes(root) {
  root.querySelectorAll("time[datetime]").forEach(function (el) {
    if (el.dataset.local) return;
    var t = new Date(el.getAttribute("datetime"));
    if (isNaN(t)) return;
    el.title = el.textContent;  // the UTC time stays one hover away
    el.textContent = t.toLocaleString(undefined, {weekday: "short", day: "numeric", month: "short",
                                                  hour: "2-digit", minute: "2-digit", second: "2-digit"});
    el.dataset.local = "1";
  });
}
localTimes(document);
document.body.addEventListener("htmx:afterSettle", function (evt) { localTimes(evt.detail.elt || document); });

// Live: swap a camera's picture only once the new one has loaded (no blank frame while it downloads).
function watchFrames() {
  document.querySelectorAll(".frame-src[data-for]").forEach(function (src) {
    var img = document.getElementById(src.dataset.for);
    var next = src.dataset.src;
    if (!img) return;
    if (!next || img.dataset.loading === next || img.getAttribute("src") === next) return;
    img.dataset.loading = next;
    var pre = new Image();
    pre.onload = function () { if (img.dataset.loading === next) img.src = next; };
    pre.src = next;
  });
}
document.body.addEventListener("htmx:afterSettle", watchFrames);
