// Colour the verdict cells of every claims table (and of the how-to chapter's legend) by the verdict's base word,
// the vocabulary of lib.claims.VERDICTS. The word stays the information; the colour is a second cue (book.css).
// Plain DOM code, no kernel: tables are the rendered Markdown of the claims cells.
(function () {
  var BASES = ["partly supported", "supported", "contradicted", "inconclusive", "not judged", "not run"];
  function baseOf(text) {
    var t = text.trim().toLowerCase();
    for (var i = 0; i < BASES.length; i++) {
      var b = BASES[i];
      if (t === b || t.indexOf(b + " (") === 0) return b;
    }
    return null;
  }
  function colour() {
    document.querySelectorAll("article table").forEach(function (table) {
      var headers = table.querySelectorAll("thead th");
      var column = -1;
      headers.forEach(function (th, i) { if (th.textContent.trim().toLowerCase().indexOf("verdict") === 0 && column < 0) column = i; });
      if (column < 0) return;
      table.classList.add("book-claims");
      table.querySelectorAll("tbody tr").forEach(function (row) {
        var cell = row.children[column];
        var base = cell && baseOf(cell.textContent);
        if (base) cell.classList.add("verdict", "verdict-" + base.replace(" ", "-"));
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", colour);
  else colour();
})();
