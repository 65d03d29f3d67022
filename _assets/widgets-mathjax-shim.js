// The ipywidgets HTML manager typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue), but Sphinx loads
// MathJax 3, which has no Hub: every label then throws. Give whatever object window.MathJax becomes a small Hub that
// forwards to MathJax 3's typesetPromise.
(function () {
  function addHub(mathjax) {
    if (mathjax && typeof mathjax === "object" && !mathjax.Hub) {
      mathjax.Hub = {
        Queue: function (job) {
          var element = job && job[2];
          if (element && typeof window.MathJax.typesetPromise === "function") {
            window.MathJax.typesetPromise([element]).catch(function () {});
          }
        },
      };
    }
  }
  var current = window.MathJax;
  addHub(current);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = value; addHub(value); },
  });
})();
