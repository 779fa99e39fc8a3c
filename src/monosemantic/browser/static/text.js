// Text view: hovering or clicking a token lists its active features (built with textContent: no HTML
// from data ever reaches innerHTML).
"use strict";
(function () {
  const el = document.getElementById("text-data");
  if (!el) return;
  const data = JSON.parse(el.textContent);
  const panel = document.getElementById("active");
  const toks = Array.from(document.querySelectorAll(".textview .tok"));
  function show(i) {
    toks.forEach((t) => t.classList.remove("sel"));
    toks[i].classList.add("sel");
    panel.replaceChildren();
    const h = document.createElement("h3");
    h.textContent = "token " + i + ": " + JSON.stringify(toks[i].textContent);
    panel.appendChild(h);
    const list = document.createElement("ol");
    list.id = "active-list";
    for (const [f, act, expl] of data.active[i]) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = data.url.replace("{f}", String(f));
      a.textContent = "#" + f;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" " + act.toFixed(3) + (expl ? " · " + expl : "")));
      list.appendChild(li);
    }
    if (!data.active[i].length) list.appendChild(document.createTextNode("no active features"));
    panel.appendChild(list);
  }
  toks.forEach((t, i) => {
    t.addEventListener("mouseenter", () => show(i));
    t.addEventListener("click", () => show(i));
  });
})();
