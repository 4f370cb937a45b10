// Projects and the admin pages: a copy button for a key shown once, and a confirmation before a
// form that cannot be undone is sent (remove, revoke, transfer, disable). Without this script
// the forms still work, without the confirmation.
(function () {
  "use strict";

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });

    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var field = document.getElementById(button.getAttribute("data-copy"));
        var status = document.getElementById("copy-status");
        if (!field) {
          return;
        }
        field.select();
        var done = function (ok) {
          if (status) {
            status.textContent = ok ? "Copied to the clipboard." : "Select the key and copy it with Ctrl+C or Cmd+C.";
          }
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(field.value).then(
            function () { done(true); },
            function () { done(false); }
          );
        } else {
          done(document.execCommand && document.execCommand("copy"));
        }
      });
    });
  });
})();
