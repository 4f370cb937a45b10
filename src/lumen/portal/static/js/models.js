// The Models page: filters the table as you type or choose, with the same rules as the server
// (which applies them when the form is submitted without JavaScript).
(function () {
  "use strict";

  function matches(row, query, kind, capability, access) {
    var data = row.dataset;
    if (query && data.search.indexOf(query) === -1) {
      return false;
    }
    if (kind && data.kind !== kind) {
      return false;
    }
    if (capability && (" " + data.caps + " ").indexOf(" " + capability + " ") === -1) {
      return false;
    }
    return !access || data.access === access;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("model-filters");
    var table = document.getElementById("models-table");
    if (!form || !table) {
      return;
    }
    var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr[data-model]"));
    var count = document.getElementById("model-count");
    var none = document.getElementById("model-none");

    function apply() {
      var query = form.elements.q.value.trim().toLowerCase();
      var kind = form.elements.kind.value;
      var capability = form.elements.capability.value;
      var access = form.elements.access.value;
      var shown = 0;
      rows.forEach(function (row) {
        var ok = matches(row, query, kind, capability, access);
        row.hidden = !ok;
        if (ok) {
          shown += 1;
        }
      });
      count.textContent = shown + " of " + rows.length + " models";
      none.hidden = shown !== 0;
      // Keep the address in step, so a reload or a shared link shows the same list.
      var params = new URLSearchParams();
      [["q", form.elements.q.value.trim()], ["kind", kind], ["capability", capability], ["access", access]]
        .forEach(function (pair) {
          if (pair[1]) {
            params.set(pair[0], pair[1]);
          }
        });
      var search = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
    }

    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      apply();
    });
  });
})();
