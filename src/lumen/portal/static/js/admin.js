// The admin users page: disable or enable a user, grant coins, reset coins. Each button calls the
// admin API (/api/admin) with the session's CSRF token (lumen.fetch), the same routes scripts use,
// so each change is checked and written to the audit log there. The result is announced, and the
// page is reloaded to show the new state.
(function () {
  "use strict";

  var MESSAGE_KEY = "lumen-admin-message";

  function announce(text, isError) {
    var box = document.getElementById("admin-message");
    if (!box) {
      return;
    }
    box.textContent = text;
    box.className = "admin-message " + (isError ? "error" : "notice");
    box.setAttribute("role", isError ? "alert" : "status");
  }

  function call(method, url, body, done) {
    return window.lumen
      .fetch(url, {
        method: method,
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      })
      .then(function (response) {
        if (response.ok) {
          try {
            window.sessionStorage.setItem(MESSAGE_KEY, done);
          } catch (e) {
            // Not stored: the page reloads without the message.
          }
          window.location.reload();
          return null;
        }
        return response.json().then(
          function (envelope) {
            announce((envelope.error && envelope.error.message) || "The change failed.", true);
          },
          function () {
            announce("The change failed (the server answered " + response.status + ").", true);
          }
        );
      })
      .catch(function () {
        announce("The change failed: Lumen could not be reached. Try again.", true);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    try {
      var pending = window.sessionStorage.getItem(MESSAGE_KEY);
      if (pending) {
        window.sessionStorage.removeItem(MESSAGE_KEY);
        announce(pending, false);
      }
    } catch (e) {
      // Storage blocked: nothing to show.
    }

    document.querySelectorAll("button[data-action]").forEach(function (button) {
      button.addEventListener("click", function () {
        var id = Number(button.getAttribute("data-user-id"));
        var email = button.getAttribute("data-email");
        var action = button.getAttribute("data-action");
        if (action === "disable") {
          if (window.confirm("Disable " + email + "? They are logged out and their API keys are refused.")) {
            call("PATCH", "/api/admin/users/" + id, { disabled: true }, email + " is disabled.");
          }
        } else if (action === "enable") {
          call("PATCH", "/api/admin/users/" + id, { disabled: false }, email + " is enabled again.");
        } else if (action === "reset") {
          if (window.confirm("Reset the coins of " + email + " to the pool's starting amount?")) {
            call("POST", "/api/admin/coins/reset", { user_id: id }, "The coins of " + email + " are reset.");
          }
        }
      });
    });

    document.querySelectorAll("form[data-action='grant']").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var id = Number(form.getAttribute("data-user-id"));
        var email = form.getAttribute("data-email");
        var amount = form.querySelector("input[name='amount']").value.trim();
        call(
          "POST",
          "/api/admin/coins/grant",
          { user_id: id, amount: amount },
          amount + " coins granted to " + email + "."
        );
      });
    });
  });
})();
