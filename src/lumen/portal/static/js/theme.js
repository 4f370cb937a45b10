// Applies the colour theme chosen with the header's toggle (kept in this browser) before the
// page is painted. Without a choice the system setting (prefers-color-scheme) applies.
(function () {
  "use strict";
  try {
    var theme = window.localStorage.getItem("lumen-theme");
    if (theme === "light" || theme === "dark") {
      document.documentElement.setAttribute("data-theme", theme);
    }
  } catch (e) {
    // Storage may be blocked (private mode, policy): follow the system setting.
  }
})();
