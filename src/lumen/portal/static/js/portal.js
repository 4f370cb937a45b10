// What every portal page shares: the theme toggle, the account menu, and `lumen.fetch`, which
// sends the session's CSRF token with state-changing requests.
(function () {
  "use strict";

  var THEMES = ["system", "light", "dark"];
  var LABELS = { system: "system", light: "light", dark: "dark" };

  function currentTheme() {
    return document.documentElement.getAttribute("data-theme") || "system";
  }

  function applyTheme(theme) {
    if (theme === "system") {
      document.documentElement.removeAttribute("data-theme");
    } else {
      document.documentElement.setAttribute("data-theme", theme);
    }
    try {
      if (theme === "system") {
        window.localStorage.removeItem("lumen-theme");
      } else {
        window.localStorage.setItem("lumen-theme", theme);
      }
    } catch (e) {
      // Not stored: the choice lasts for this page only.
    }
    var toggle = document.getElementById("theme-toggle");
    if (toggle) {
      var next = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
      toggle.setAttribute("aria-label", "Colour theme: " + LABELS[theme] + ". Switch to " + LABELS[next]);
    }
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // fetch() with the CSRF header, JSON by default; pages call lumen.fetch instead of fetch.
  function lumenFetch(url, options) {
    var opts = Object.assign({ credentials: "same-origin" }, options || {});
    var headers = new Headers(opts.headers || {});
    var method = (opts.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      headers.set("X-CSRF-Token", csrfToken());
    }
    if (!headers.has("Accept")) {
      headers.set("Accept", "application/json");
    }
    opts.headers = headers;
    return window.fetch(url, opts);
  }

  window.lumen = { csrfToken: csrfToken, fetch: lumenFetch };

  document.addEventListener("DOMContentLoaded", function () {
    applyTheme(currentTheme());
    var toggle = document.getElementById("theme-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        var theme = currentTheme();
        applyTheme(THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length]);
      });
    }
    var menu = document.querySelector(".user-menu");
    if (menu) {
      document.addEventListener("keydown", function (event) {
        if (event.key === "Escape" && menu.open) {
          menu.open = false;
          menu.querySelector("summary").focus();
        }
      });
      document.addEventListener("click", function (event) {
        if (menu.open && !menu.contains(event.target)) {
          menu.open = false;
        }
      });
    }
  });
})();
