// Static export: sort the feature table by a column header, filter its rows by text.
"use strict";
(function () {
  const table = document.getElementById("features");
  if (!table) return;
  const body = table.tBodies[0];
  table.querySelectorAll("th").forEach((th, col) => {
    th.style.cursor = "pointer";
    th.addEventListener("click", () => {
      const desc = th.dataset.desc !== "1";
      th.dataset.desc = desc ? "1" : "0";
      const key = (tr) => {
        const td = tr.cells[col];
        const v = td.dataset.v;
        return v !== undefined ? parseFloat(v) : td.textContent;
      };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (desc ? -1 : 1));
      rows.forEach((r) => body.appendChild(r));
    });
  });
  const filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", () => {
      const q = filter.value.toLowerCase();
      Array.from(body.rows).forEach((r) => { r.hidden = q && !r.textContent.toLowerCase().includes(q); });
    });
  }
})();
