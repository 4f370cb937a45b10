// Profile → API keys: a revocation is confirmed in a dialog (without JavaScript, the Revoke link
// opens a confirmation page instead), and a new key gets the focus, so it is read out first.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    var created = document.getElementById("created");
    if (created) {
      created.focus();
    }
    var dialog = document.getElementById("revoke-dialog");
    if (!dialog || typeof dialog.showModal !== "function") {
      return;
    }
    var form = document.getElementById("revoke-form");
    var text = document.getElementById("revoke-text");
    var cancel = document.getElementById("revoke-cancel");
    var opener = null;
    document.querySelectorAll("a.revoke-link").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        opener = link;
        form.setAttribute("action", link.getAttribute("href"));
        text.textContent = "Programs using “" + link.dataset.keyName + "” (" + link.dataset.keyHint + ") are " +
          "refused at once. The key stays in your list as revoked; this cannot be undone.";
        dialog.showModal();
        cancel.focus();
      });
    });
    cancel.addEventListener("click", function () {
      dialog.close();
    });
    dialog.addEventListener("close", function () {
      if (opener) {
        opener.focus();
      }
    });
  });
})();
